-- Lease ready jobs from several functions' ready sets, fairly: each pass gives every function
-- with work an equal share of what is left, so one flooded function cannot starve the others.
-- KEYS[1] leased zset  KEYS[2] lease counter  KEYS[3] history stream  KEYS[4..] ready zsets
-- ARGV[1] now_ms  ARGV[2] lease_ms  ARGV[3] total to lease  ARGV[4] shard key tag
-- ARGV[5..4+n] per-function caps, aligned with KEYS[4..]  ARGV[5+n] finished-run ttl s
-- ARGV[6+n] the leasing process's holder id (server/liveness.py), kept in the job's `holder`
-- so a scavenger hands its leases back as soon as its heartbeat is gone ('' or absent: none)
-- Returns {jobs, next_due_ms}: each job {job_id, lease_id, run_id, function_id, attempt,
-- max_attempts, event_json, expires_ms, {step_id, memo, ...}, step, events}, where step is the planned
-- step a job runs ('' for a run's main job); next_due_ms is the earliest score left in those
-- ready sets, -1 when they are empty.
-- A leased job's hash keeps `ready` (when it became runnable) and `leased` (now), which the
-- opcode scripts copy into the attempt's history record for its spans. A job handed back
-- without an answer (server/queue/lua/_redeliver.lua) gets its new lease in `redelivery_lease`.
-- Timeouts: a queued run past its `start_by` (ms) or a running one past its `finish_by` ends
-- here as failed (StartTimeoutError / FinishTimeoutError) instead of being leased; a run that
-- starts gets `finish_by` = now + its `finish_ms` and joins the shard's deadlines zset, which
-- the executor's sweep reads for runs overdue while a worker holds them.
-- Loaded after server/state/lua/_waits.lua, _flow.lua and server/state/lua/_end_run.lua.
-- Flow control (_flow.lua): a run with a `flow` field ({"c": [[held key, waiting
-- key, limit, why], ...], "t": [throttle key, limit, period ms, burst], "wc"/"wt": waiting
-- sets}) has its job admitted first: a full concurrency key parks it (see _flow.lua), a
-- throttle not yet open re-scores the run's first job at the time it opens (reserving it, so
-- runs start in order). A leased job of such a run takes its slots, clears the run's `why`
-- and carries the run's `events` (a batch) as the reply's eleventh element. Runs without
-- `flow` pay one more field read. At most 4 * total + 64 jobs are looked at per call.
local leased, counter, history = KEYS[1], KEYS[2], KEYS[3]
local now = tonumber(ARGV[1])
local expires = now + tonumber(ARGV[2])
local remaining = tonumber(ARGV[3])
local tag = ARGV[4]
local n = #KEYS - 3
local caps, active = {}, {}
for i = 1, n do
  caps[i] = tonumber(ARGV[4 + i])
  if caps[i] > 0 then active[#active + 1] = i end
end
local function fail_timeout(rk, run_id, fn, app, name, limit_ms)
  local err = cjson.encode({name = name, message = 'the run exceeded its ' ..
    (name == 'StartTimeoutError' and 'start' or 'finish') .. ' timeout of ' .. limit_ms ..
    ' ms', stack = ''})
  redis.call('ZREM', tag .. ':deadlines', run_id)
  record_run_failed(rk, run_id, err, now, tonumber(ARGV[5 + n]), history, fn, app)
end
local job_prefix = tag .. ':job:'
local budget = remaining * 4 + 64
local woke = false  -- admit put a waiter back in this pass: scan the function again

-- Whether the job may be leased now under its run's flow control (see the header).
local function admit(spec, id, jk, ready, score, rk, run_id, first, start_by)
  local c = spec.c
  if c then
    for k, lim in ipairs(c) do
      if held_count(lim[1], leased, now) >= lim[3] then
        redis.call('ZADD', lim[2], score, id)
        -- A run that must start by `start_by` is met again then, and fails if still waiting.
        redis.call('ZADD', ready, (first and start_by > 0) and start_by + 1 or PARKED, id)
        redis.call('HSET', jk, 'parked', ready)
        set_why(rk, run_id, lim[4], spec.wc)
        -- A job woken by another of its keys gives that key's room to its next waiter.
        for k2, other in ipairs(c) do
          if k2 ~= k and held_count(other[1], leased, now) < other[3]
              and wake_one(other[2], job_prefix) == 1 then
            woke = true
          end
        end
        return false
      end
    end
  end
  local t = spec.t
  if first and t and redis.call('HGET', jk, 'thr') ~= '1' then
    local at = gcra(t[1], now, t[2], t[3], t[4], true)
    if at > 0 then
      redis.call('HSET', jk, 'thr', '1')
      redis.call('ZADD', ready, at, id)
      set_why(rk, run_id, 'throttled until ' .. iso(at), spec.wt)
      return false
    end
  end
  return true
end

-- The job is leased: take its slots, clear `why`; returns the run's batch events ('' none).
local function took(spec, id, jk, rk, run_id)
  if spec.c then
    local slots = {}
    for _, lim in ipairs(spec.c) do
      redis.call('ZADD', lim[1], expires, id)
      slots[#slots + 1] = lim[1] .. ' ' .. lim[2]
    end
    redis.call('HSET', jk, 'slots', table.concat(slots, ' '))
  end
  redis.call('HDEL', jk, 'parked')
  clear_why(rk, run_id)
  return redis.call('HGET', rk, 'events') or ''
end

local out = {}
while remaining > 0 and #active > 0 and budget > 0 do
  local chunk = math.max(1, math.floor(remaining / #active))
  local still = {}
  for _, i in ipairs(active) do
    if remaining <= 0 then break end
    local take = math.min(chunk, caps[i], remaining)
    local ready = KEYS[3 + i]
    woke = false
    local ids = redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'WITHSCORES', 'LIMIT', 0, take)
    budget = budget - #ids / 2
    for j = 1, #ids, 2 do
      local id = ids[j]
      redis.call('ZREM', ready, id)
      local jk = tag .. ':job:' .. id
      local job = redis.call('HMGET', jk, 'run', 'fn', 'attempt', 'step', 'redelivery_lease')
      local rk = job[1] and (tag .. ':run:' .. job[1])
      local run = rk and redis.call('HMGET', rk, 'status', 'event', 'max', 'created',
        'start_by', 'finish_by', 'finish_ms', 'app', 'flow') or {}
      local spec = run[9] and cjson.decode(run[9])
      local start_by, finish_by = tonumber(run[5]) or 0, tonumber(run[6]) or 0
      if run[1] == 'queued' and start_by > 0 and now > start_by then
        redis.call('DEL', jk)
        fail_timeout(rk, job[1], job[2], run[8], 'StartTimeoutError',
          start_by - tonumber(run[4]))
      elseif run[1] == 'running' and finish_by > 0 and now > finish_by then
        redis.call('DEL', jk)
        fail_timeout(rk, job[1], job[2], run[8], 'FinishTimeoutError', tonumber(run[7]) or 0)
      elseif (run[1] == 'queued' or run[1] == 'running') and spec
          and not admit(spec, id, jk, ready, tonumber(ids[j + 1]), rk, job[1],
            run[1] == 'queued', start_by) then
        -- Held by flow control: admit parked it or scored it later; nothing more to do.
      elseif run[1] == 'queued' or run[1] == 'running' then
        local lease = tostring(redis.call('INCR', counter))
        -- A new run's first job is queued at 0, "at once": it waited since the run's creation.
        local ready_at = math.max(tonumber(ids[j + 1]), tonumber(run[4]) or 0)
        redis.call('HSET', jk, 'lease', lease, 'ready', ready_at, 'leased', now,
          'holder', ARGV[6 + n] or '')
        -- A redelivery's lease: a hand-back of it continues the job's redelivery count.
        if job[5] == 'pending' then
          redis.call('HSET', jk, 'redelivery_lease', lease)
        end
        redis.call('ZADD', leased, expires, id)
        if run[1] == 'queued' then
          redis.call('HSET', rk, 'status', 'running', 'started', now)
          local finish_ms = tonumber(run[7]) or 0
          if finish_ms > 0 then
            redis.call('HSET', rk, 'finish_by', now + finish_ms)
            redis.call('ZADD', tag .. ':deadlines', now + finish_ms, job[1])
          end
          redis.call('XADD', history, '*', 'k', 'start', 'run', job[1], 'ts', now, 'fn', job[2])
        end
        local events = spec and took(spec, id, jk, rk, job[1]) or ''
        local steps = redis.call('HGETALL', rk .. ':steps')
        out[#out + 1] = {id, lease, job[1], job[2], job[3], run[3], run[2], expires, steps,
          job[4] or '', events}
        caps[i] = caps[i] - 1
        remaining = remaining - 1
      else
        -- A job whose run is gone or finished (cancelled while queued) is dropped.
        redis.call('DEL', jk)
      end
    end
    if (#ids == 2 * take or woke) and caps[i] > 0 then still[#still + 1] = i end
  end
  active = still
end
local next_due = -1
for i = 1, n do
  local first = redis.call('ZRANGE', KEYS[3 + i], 0, 0, 'WITHSCORES')
  if first[2] then
    local score = tonumber(first[2])
    if next_due < 0 or score < next_due then next_due = score end
  end
end
return {out, next_due}
