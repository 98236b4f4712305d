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
#: ttl, field, value, ...}`` per claimed job (the hash as read before the status change).
CLAIM = """
local worker = ARGV[1]
local wkey = ARGV[2]
local now_str = ARGV[3]
local now = tonumber(ARGV[4])
local default_ttl = tonumber(ARGV[6])
local wanted = tonumber(ARGV[7])
local claimed = {}
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
      local wexec = 'rq:worker:' .. worker .. ':executions'
      redis.call('SADD', wexec, comp)
      redis.call('EXPIRE', wexec, ttl + 60)
      redis.call('HSET', wkey, 'state', 'busy', 'last_heartbeat', now_str)
      if redis.call('TTL', wkey) < ttl then redis.call('EXPIRE', wkey, ttl) end
      redis.call('HSET', jkey, 'last_heartbeat', now_str, 'status', 'started', 'started_at', now_str,
                 'worker_name', worker)
      redis.call('PERSIST', jkey)
      local out = {qkey, job_id, exec_id, ttl}
      for i = 1, #data do out[#out + 1] = data[i] end
      claimed[#claimed + 1] = out
    end
  end
end
return claimed
"""

#: ARGV: job id, execution id, worker name, worker key, origin, started_at, ended_at (RQ date
#: strings), now (unix seconds), result ttl, working seconds, then the result stream's
#: field/value pairs. Mirrors a stock worker's ``handle_job_success`` for a job without
#: dependents and with a non-zero result ttl; returns 0 without writing anything when the job
#: has dependents (the caller then takes RQ's own path), 1 when done or done before (its
#: execution is gone: a retried call, or recovery took the job over).
FINISH = """
local job_id, exec_id, worker, wkey, origin = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local started, ended, now = ARGV[6], ARGV[7], tonumber(ARGV[8])
local ttl = tonumber(ARGV[9])
local jkey = 'rq:job:' .. job_id
local comp = job_id .. ':' .. exec_id
-- Written already (a retry after a lost reply), or taken over by recovery: nothing to do.
if redis.call('EXISTS', 'rq:execution:' .. comp) == 0 then return 1 end
if redis.call('SCARD', jkey .. ':dependents') > 0 then return 0 end
redis.call('HINCRBY', wkey, 'successful_job_count', 1)
redis.call('HINCRBYFLOAT', wkey, 'total_working_time', ARGV[10])
redis.call('HSET', jkey, 'status', 'finished', 'started_at', started, 'ended_at', ended,
           'last_heartbeat', ended, 'worker_name', worker)
local rkey = 'rq:results:' .. job_id
local fields = {}
for i = 11, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', rkey, 'MAXLEN', '~', '10', '*', unpack(fields))
local fkey = 'rq:finished:' .. origin
if ttl == -1 then
  redis.call('PERSIST', rkey)
  redis.call('ZADD', fkey, '+inf', job_id)
else
  redis.call('EXPIRE', rkey, ttl)
  redis.call('ZADD', fkey, math.floor(now) + ttl, job_id)
  redis.call('EXPIRE', jkey, ttl)
  redis.call('EXPIRE', jkey .. ':dependents', ttl)
  redis.call('EXPIRE', jkey .. ':dependencies', ttl)
end
redis.call('DEL', 'rq:execution:' .. comp)
redis.call('ZREM', 'rq:wip:' .. origin, comp)
redis.call('ZREM', 'rq:executions:' .. job_id, exec_id)
redis.call('SREM', 'rq:worker:' .. worker .. ':executions', comp)
return 1
"""
