-- KEYS: lock. ARGV: token, ttl ms. Compare-and-pexpire.
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
