-- Claim up to N jobs for a worker, as RQ's own Worker.prepare_execution +
-- prepare_job_execution would mark each one started.
-- KEYS: queue keys in priority order.
-- ARGV: worker name, worker key, (unused), (unused), execution id prefix, ttl for jobs
--       without a timeout, most jobs to claim, RQ's key prefix ("rq:"), "spread" to take the
--       jobs of one claim from the queues in turn (round robin).
-- The moment the jobs start is the server's clock (TIME), not the caller's: the call may
-- wait in the connection behind a blocking wait for work (a BLMOVE sent with it).
-- Pops job ids whose hashes still exist. Returns {now (RQ date string),
-- {{queue_key, job_id, execution_id, ttl, {field, value, ...}}, ...}}, one entry per claimed job
-- (the hash as read before the status change).
local worker = ARGV[1]
local wkey = ARGV[2]

-- RQ's date format (%Y-%m-%dT%H:%M:%S.%fZ, UTC) of unix seconds + microseconds; the date is
-- Howard Hinnant's days-to-civil algorithm (Redis' Lua has no os.date).
local function rq_date(sec, usec)
  local days = math.floor(sec / 86400)
  local rem = sec - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', year, month, day,
    math.floor(rem / 3600), math.floor(rem % 3600 / 60), rem % 60, usec)
end

local time = redis.call('TIME')
local sec, usec = tonumber(time[1]), tonumber(time[2])
local now_str = rq_date(sec, usec)
local now_unix = string.format('%d.%06d', sec, usec)
local now = tonumber(now_unix)
local default_ttl = tonumber(ARGV[6])
local wanted = tonumber(ARGV[7])
local rq = ARGV[8]
local queue_prefix_length = #rq + #'queue:'
local claimed = {}
local wexec = rq .. 'worker:' .. worker .. ':executions'
local max_ttl = 0

-- Claim the next job of qkey whose hash still exists; false when the queue is empty.
-- The id is read first and popped after the first write, a denyoom HSET: when Redis is full
-- (maxmemory under noeviction) it refuses a script's first write, so the whole claim is
-- refused and the job stays queued (popping first would let the rest of the script through).
local function claim_one(qkey)
  while true do
    local job_id = redis.call('LINDEX', qkey, 0)
    if not job_id then return false end
    local jkey = rq .. 'job:' .. job_id
    local data = redis.call('HGETALL', jkey)
    if #data == 0 then
      redis.call('LPOP', qkey)
    else
      local timeout, origin = nil, nil
      for i = 1, #data, 2 do
        local f = data[i]
        if f == 'timeout' then timeout = data[i + 1] elseif f == 'origin' then origin = data[i + 1] end
      end
      if not origin or origin == '' then origin = string.sub(qkey, queue_prefix_length + 1) end
      local ttl
      if timeout == '-1' then ttl = default_ttl else ttl = (tonumber(timeout) or default_ttl) + 60 end
      local exec_id = ARGV[5]
      if #claimed > 0 then exec_id = exec_id .. string.format('%04x', #claimed) end
      local comp = job_id .. ':' .. exec_id
      local ekey = rq .. 'execution:' .. comp
      redis.call('HSET', ekey, 'id', exec_id, 'job_id', job_id, 'created_at', now_unix,
                 'last_heartbeat', now_unix, 'worker_name', worker)
      redis.call('LPOP', qkey)
      redis.call('EXPIRE', ekey, ttl)
      local xkey = rq .. 'executions:' .. job_id
      redis.call('ZADD', xkey, now + ttl + 60, exec_id)
      redis.call('EXPIRE', xkey, ttl + 60)
      redis.call('ZADD', rq .. 'wip:' .. origin, math.floor(now) + ttl, comp)
      redis.call('SADD', wexec, comp)
      if ttl > max_ttl then max_ttl = ttl end
      redis.call('HSET', jkey, 'last_heartbeat', now_str, 'status', 'started', 'started_at', now_str,
                 'worker_name', worker)
      redis.call('PERSIST', jkey)
      claimed[#claimed + 1] = {qkey, job_id, exec_id, ttl, data}
      return true
    end
  end
end

if ARGV[9] == 'spread' then
  -- RQ's round robin, job by job: after a job of queue i, look from queue i + 1 on.
  local n, start = #KEYS, 1
  while #claimed < wanted do
    local found = false
    for step = 0, n - 1 do
      local index = (start - 1 + step) % n + 1
      if claim_one(KEYS[index]) then
        start = index % n + 1
        found = true
        break
      end
    end
    if not found then break end
  end
else
  -- RQ's default: always the first queue that has a job.
  for _, qkey in ipairs(KEYS) do
    while #claimed < wanted and claim_one(qkey) do end
    if #claimed >= wanted then break end
  end
end
-- The worker's own keys once per call, with the longest ttl of the jobs it took.
if #claimed > 0 then
  redis.call('EXPIRE', wexec, max_ttl + 60)
  redis.call('HSET', wkey, 'state', 'busy', 'last_heartbeat', now_str)
  if redis.call('TTL', wkey) < max_ttl then redis.call('EXPIRE', wkey, max_ttl) end
end
return {now_str, claimed}
