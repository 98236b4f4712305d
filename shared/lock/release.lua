-- KEYS: lock, waiters flag, notification list. ARGV: token, list ttl ms.
-- Compare-and-delete; then, when someone waits and the lock is free here, wake one waiter.
local deleted = 0
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('del', KEYS[1])
  deleted = 1
end
if redis.call('exists', KEYS[2]) == 1 and redis.call('exists', KEYS[1]) == 0 then
  redis.call('rpush', KEYS[3], '1')
  redis.call('ltrim', KEYS[3], -1, -1)
  redis.call('pexpire', KEYS[3], ARGV[2])
end
return deleted
