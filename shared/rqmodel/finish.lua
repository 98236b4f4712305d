-- Many successes of one worker in one call, each as RQ's own Worker.handle_job_success
-- writes it for a job without dependents and with a non-zero result ttl.
-- KEYS: the worker key. ARGV: RQ's key prefix ("rq:"), then per job its argument count and its
-- arguments: job id, execution id, worker name, "1" when the job has dependencies (a
-- dependencies set to expire), origin, started_at, ended_at (RQ date strings), now (unix
-- seconds), result ttl, working seconds, then the result stream's field/value pairs.
-- Returns one result per job: 1 done (or done before: its execution is gone, a retried call
-- or recovery took the job over), 0 not written because the job has dependents (the caller
-- then takes RQ's own path). Adds the worker's counters once.
local rq = ARGV[1]

local function finish(a, first, n)
  local job_id, exec_id, worker, origin = a[first], a[first + 1], a[first + 2], a[first + 4]
  local started, ended, now = a[first + 5], a[first + 6], tonumber(a[first + 7])
  local ttl = tonumber(a[first + 8])
  local jkey = rq .. 'job:' .. job_id
  local comp = job_id .. ':' .. exec_id
  local ekey = rq .. 'execution:' .. comp
  if redis.call('EXISTS', ekey) == 0 then return 2 end
  if redis.call('SCARD', jkey .. ':dependents') > 0 then return 0 end
  redis.call('HSET', jkey, 'status', 'finished', 'started_at', started, 'ended_at', ended,
             'last_heartbeat', ended, 'worker_name', worker)
  local rkey = rq .. 'results:' .. job_id
  redis.call('XADD', rkey, 'MAXLEN', '~', '10', '*', unpack(a, first + 10, first + n - 1))
  local fkey = rq .. 'finished:' .. origin
  if ttl == -1 then
    redis.call('PERSIST', rkey)
    redis.call('ZADD', fkey, '+inf', job_id)
  else
    redis.call('EXPIRE', rkey, ttl)
    redis.call('ZADD', fkey, math.floor(now) + ttl, job_id)
    redis.call('EXPIRE', jkey, ttl)
    -- (the dependents set is empty, so it does not exist: nothing to expire)
    -- RQ 3.0's dependencies set has two colons after 'job' (Job.dependencies_key).
    if a[first + 3] == '1' then redis.call('EXPIRE', rq .. 'job::' .. job_id .. ':dependencies', ttl) end
  end
  redis.call('DEL', ekey)
  redis.call('ZREM', rq .. 'wip:' .. origin, comp)
  redis.call('ZREM', rq .. 'executions:' .. job_id, exec_id)
  redis.call('SREM', rq .. 'worker:' .. worker .. ':executions', comp)
  return 1
end

local results, done, working = {}, 0, 0
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local r = finish(ARGV, i + 1, n)
  if r == 1 then
    done = done + 1
    working = working + tonumber(ARGV[i + 10])
  end
  results[#results + 1] = math.min(r, 1)
  i = i + 1 + n
end
if done > 0 then
  redis.call('HINCRBY', KEYS[1], 'successful_job_count', done)
  redis.call('HINCRBYFLOAT', KEYS[1], 'total_working_time', working)
end
return results
