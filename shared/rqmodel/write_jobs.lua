-- Enqueue many jobs of one template, all or none, and count them.
-- KEYS: the queue, the set of queues, the job counters.
-- ARGV: stamp, n, the counter's field, the job hash prefix ("rq:job:"), n (id, data) pairs,
-- the template's field/value pairs. Writes n job hashes (template + data + timestamps),
-- pushes their ids and counts them as enqueued.
local stamp, n, counter, job_prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local fields = {}
for i = 5 + 2 * n, #ARGV do fields[#fields + 1] = ARGV[i] end
for _, f in ipairs({'created_at', stamp, 'enqueued_at', stamp, 'data'}) do fields[#fields + 1] = f end
local ids = {}
for j = 0, n - 1 do
  local id = ARGV[5 + 2 * j]
  fields[#fields + 1] = ARGV[6 + 2 * j]
  redis.call('HSET', job_prefix .. id, unpack(fields))
  fields[#fields] = nil
  ids[#ids + 1] = id
end
redis.call('SADD', KEYS[2], KEYS[1])
for i = 1, #ids, 1000 do redis.call('RPUSH', KEYS[1], unpack(ids, i, math.min(i + 999, #ids))) end
redis.call('HINCRBY', KEYS[3], counter, n)
return n
