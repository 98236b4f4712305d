-- Enqueue one job, as Queue.enqueue writes it, and count it.
-- KEYS: its hash, the queue, the set of queues, the job counters.
-- ARGV: the counter's field, the job id, then the hash's field/value pairs, complete: the
-- script only passes them on.
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[4], ARGV[1], 1)
return 1
