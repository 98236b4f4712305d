-- KEYS: lock, fence counter, waiters flag. ARGV: token, ttl ms.
-- Returns the new fence counter (> 0) when granted, else minus the holder's remaining ms.
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('incr', KEYS[2])
end
local pttl = redis.call('pttl', KEYS[1])
if pttl < 1 then pttl = 1 end
redis.call('set', KEYS[3], '1', 'PX', pttl + 1000)
return -pttl
