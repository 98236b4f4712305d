-- KEYS: fence counter. ARGV: token. Raises the counter to at least the token.
local current = tonumber(redis.call('get', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('set', KEYS[1], ARGV[1]) end
return 1
