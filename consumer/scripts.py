"""Server-side scripts of the fast worker: claim a job and finish it, each in one round trip.

They write exactly the keys stock RQ writes (job hash, execution hash, ``rq:wip:``,
``rq:executions:``, ``rq:results:``, ``rq:finished:``, the worker hash and its execution set),
so ``rq info``, the dashboard and RQ's own maintenance read the same data model.
"""

from __future__ import annotations

#: KEYS: queue keys in priority order. ARGV: worker name, worker key, now (RQ date string),
#: now (unix seconds), execution id prefix, ttl for jobs without a timeout, most jobs to claim.
#: Pops job ids whose hashes still exist and marks each started, like ``prepare_execution`` +
#: ``prepare_job_execution`` of a stock worker. Returns one ``{queue_key, job_id, execution_id,
#: ttl, {field, value, ...}}`` per claimed job (the hash as read before the status change).
CLAIM = """
local worker = ARGV[1]
local wkey = ARGV[2]
local now_str = ARGV[3]
local now = tonumber(ARGV[4])
local default_ttl = tonumber(ARGV[6])
local wanted = tonumber(ARGV[7])
local claimed = {}
local wexec = 'rq:worker:' .. worker .. ':executions'
local max_ttl = 0
for _, qkey in ipairs(KEYS) do
  while #claimed < wanted do
    local job_id = redis.call('LPOP', qkey)
    if not job_id then break end
    local jkey = 'rq:job:' .. job_id
    local data = redis.call('HGETALL', jkey)
    if #data > 0 then
      local timeout, origin = nil, nil
      for i = 1, #data, 2 do
        local f = data[i]
        if f == 'timeout' then timeout = data[i + 1] elseif f == 'origin' then origin = data[i + 1] end
      end
      if not origin or origin == '' then origin = string.sub(qkey, 10) end
      local ttl
      if timeout == '-1' then ttl = default_ttl else ttl = (tonumber(timeout) or default_ttl) + 60 end
      local exec_id = ARGV[5]
      if #claimed > 0 then exec_id = exec_id .. string.format('%04x', #claimed) end
      local comp = job_id .. ':' .. exec_id
      local ekey = 'rq:execution:' .. comp
      redis.call('HSET', ekey, 'id', exec_id, 'job_id', job_id, 'created_at', ARGV[4],
                 'last_heartbeat', ARGV[4], 'worker_name', worker)
      redis.call('EXPIRE', ekey, ttl)
      local xkey = 'rq:executions:' .. job_id
      redis.call('ZADD', xkey, now + ttl + 60, exec_id)
      redis.call('EXPIRE', xkey, ttl + 60)
      redis.call('ZADD', 'rq:wip:' .. origin, math.floor(now) + ttl, comp)
      redis.call('SADD', wexec, comp)
      if ttl > max_ttl then max_ttl = ttl end
      redis.call('HSET', jkey, 'last_heartbeat', now_str, 'status', 'started', 'started_at', now_str,
                 'worker_name', worker)
      redis.call('PERSIST', jkey)
      claimed[#claimed + 1] = {qkey, job_id, exec_id, ttl, data}
    end
  end
end
-- The worker's own keys once per call, with the longest ttl of the jobs it took.
if #claimed > 0 then
  redis.call('EXPIRE', wexec, max_ttl + 60)
  redis.call('HSET', wkey, 'state', 'busy', 'last_heartbeat', now_str)
  if redis.call('TTL', wkey) < max_ttl then redis.call('EXPIRE', wkey, max_ttl) end
end
return claimed
"""

#: One job's success, as a Lua function of its argument list ``a``: job id, execution id,
#: worker name, "1" when the job has dependencies (a ``:dependencies`` set to expire), origin,
#: started_at, ended_at (RQ date strings), now (unix seconds),
#: result ttl, working seconds, then the result stream's field/value pairs. Mirrors a stock
#: worker's ``handle_job_success`` for a job without dependents and with a non-zero result ttl.
#: Returns 0 without writing anything when the job has dependents (the caller then takes RQ's
#: own path); 1 when done; 2 when done before (its execution is gone: a retried call, or
#: recovery took the job over). The worker's counters are the caller's to add.
_FINISH_FUNCTION = """
local function finish(a, first, n)
  local job_id, exec_id, worker, origin = a[first], a[first + 1], a[first + 2], a[first + 4]
  local started, ended, now = a[first + 5], a[first + 6], tonumber(a[first + 7])
  local ttl = tonumber(a[first + 8])
  local jkey = 'rq:job:' .. job_id
  local comp = job_id .. ':' .. exec_id
  if redis.call('EXISTS', 'rq:execution:' .. comp) == 0 then return 2 end
  if redis.call('SCARD', jkey .. ':dependents') > 0 then return 0 end
  redis.call('HSET', jkey, 'status', 'finished', 'started_at', started, 'ended_at', ended,
             'last_heartbeat', ended, 'worker_name', worker)
  local rkey = 'rq:results:' .. job_id
  redis.call('XADD', rkey, 'MAXLEN', '~', '10', '*', unpack(a, first + 10, first + n - 1))
  local fkey = 'rq:finished:' .. origin
  if ttl == -1 then
    redis.call('PERSIST', rkey)
    redis.call('ZADD', fkey, '+inf', job_id)
  else
    redis.call('EXPIRE', rkey, ttl)
    redis.call('ZADD', fkey, math.floor(now) + ttl, job_id)
    redis.call('EXPIRE', jkey, ttl)
    -- (the dependents set is empty, so it does not exist: nothing to expire)
    if a[first + 3] == '1' then redis.call('EXPIRE', jkey .. ':dependencies', ttl) end
  end
  redis.call('DEL', 'rq:execution:' .. comp)
  redis.call('ZREM', 'rq:wip:' .. origin, comp)
  redis.call('ZREM', 'rq:executions:' .. job_id, exec_id)
  redis.call('SREM', 'rq:worker:' .. worker .. ':executions', comp)
  return 1
end
"""

#: Many successes of one worker in one call. ARGV: worker key, then per job its argument
#: count and its arguments (as for one job, above). Returns one result per job (1 for done
#: or done before, 0 for "has dependents"); adds the worker's counters once.
FINISH_MANY = (
    _FINISH_FUNCTION
    + """
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
  redis.call('HINCRBY', ARGV[1], 'successful_job_count', done)
  redis.call('HINCRBYFLOAT', ARGV[1], 'total_working_time', working)
end
return results
"""
)
