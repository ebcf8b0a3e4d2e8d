-- Prelude of every opcode script (prepended by the loader, after _waits.lua and
-- server/queue/lua/_flow.lua): fencing and the shared moves. Every job leaving `leased` goes
-- through free_slots (flow control's concurrency slots, _flow.lua) first.
-- KEYS[1] run hash  KEYS[2] steps hash  KEYS[3] job hash  KEYS[4] leased zset
-- KEYS[5] ready zset of the function  KEYS[6] history stream  KEYS[7] lease counter
-- KEYS[8] stack list (step ids in the order they were memoised)
-- KEYS[9] planned set (step ids planned to run as their own jobs, not yet memoised)
-- ARGV[1] job_id  ARGV[2] lease_id  ARGV[3] now_ms  ARGV[4] relock expiry ms (0: never)
-- ARGV[5] finished-run ttl s  ARGV[6] job key prefix of the shard
-- ARGV[7] max run state bytes (max_run_state_bytes; 0: no cap);
-- the script's own arguments start at ARGV[8].
-- A run has one main job (id = run id) and, while parallel steps run, one job per planned
-- step (id = "<run id>:<step id>", its hash names the step in `step`).
-- Failures: -2 the lease is stale (result dropped), -3 the run is no longer running.
local run, steps, job, leased, ready, history, counter, stack, planned =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local job_id, lease_id, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local relock_expires, ttl, job_prefix = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local state_cap = tonumber(ARGV[7]) or 0
local held = redis.call('HMGET', job, 'lease', 'attempt', 'run', 'step', 'ready', 'leased',
  'holder')
if lease_id == '' or held[1] ~= lease_id then
  return -2
end
local attempt = tonumber(held[2])
local run_id = held[3]
local target = held[4] or ''  -- '' for the main job, else the planned step this job runs
local meta = redis.call('HMGET', run, 'status', 'max', 'event', 'fn', 'app', 'flow', 'events')
if meta[1] ~= 'running' then
  free_slots(job_prefix, job_id)
  redis.call('ZREM', leased, job_id)
  redis.call('DEL', job)
  return -3
end
local max_attempts = tonumber(meta[2])

-- Frees job `id`'s concurrency slots (_flow.lua); only runs with flow control (`flow`) have
-- any, so other runs skip even the field read.
local function release_slots(id)
  if meta[6] then free_slots(job_prefix, id) end
end
-- Whether the run has concurrency limits (lease.lua must admit its other jobs).
local limited = meta[6] and string.find(meta[6], '"c":', 1, true)

-- The attempt's function, app, lease and times, for its spans (server/telemetry/spans.py):
-- `ready` is '' when the job was relocked, i.e. it never waited in a ready set.
local function attempt_fields()
  return 'fn', meta[4] or '', 'app', meta[5] or '', 'lease', lease_id, 'ready', held[5] or '',
    'started', held[6] or ''
end

local function record_step(step_id, name, status, step_attempt, output, err, until_ms)
  redis.call('XADD', history, '*', 'k', 'step', 'run', run_id, 'step', step_id, 'name', name,
    'attempt', step_attempt, 'status', status, 'output', output, 'error', err, 'ts', now,
    'until', until_ms or '', attempt_fields())
end

-- Schedules job `id` (hash `key`) at `at`. When it is due now and the caller can take it,
-- the job stays leased under a new lease id and its payload is returned, saving a lease
-- round trip between steps: {lease, attempt, max_attempts, event, steps, job_id, step,
-- events}. The same job keeps its concurrency slots; another job of a flow-controlled run
-- (the main job after its planned steps) is queued instead, for lease.lua to admit.
local function continue_job(key, id, step, at, next_attempt)
  if relock_expires > 0 and at <= now and (id == job_id or not limited) then
    local lease = tostring(redis.call('INCR', counter))
    redis.call('HSET', key, 'lease', lease, 'attempt', next_attempt, 'ready', '', 'leased', now)
    if key ~= job then  -- the main job goes to whoever held this one (server/liveness.py)
      redis.call('HSET', key, 'holder', held[7] or '')
    end
    redis.call('ZADD', leased, relock_expires, id)
    return {lease, next_attempt, max_attempts, meta[3], redis.call('HGETALL', steps), id, step,
      meta[7] or ''}
  end
  redis.call('HSET', key, 'lease', '', 'attempt', next_attempt)
  release_slots(id)
  redis.call('ZREM', leased, id)
  redis.call('ZADD', ready, at, id)
  return 1
end

-- Schedules this job's next attempt at `at` (see continue_job).
local function continue_at(at, next_attempt)
  return continue_job(job, job_id, target, at, next_attempt)
end

-- The job's step is memoised: the main job runs the function again now; a planned step's
-- job ends, and the last planned step to end (the first, in a race) wakes the main job
-- (_waits.lua's end_planned).
local function advance()
  if target == '' then
    return continue_at(now, 0)
  end
  release_slots(job_id)
  redis.call('ZREM', leased, job_id)
  redis.call('ZREM', ready, job_id)
  if not end_planned(job, target, planned, steps, run .. ':waitrefs', ready, leased,
                     job_prefix, run_id) then
    return 1
  end
  return continue_job(job_prefix .. run_id, run_id, '', now, 0)
end

-- What a parked step (a sleep, wait or invoke) is memoised as while it waits in a parallel
-- group: the SDKs then see null, never its timeout's error (steps_planned.lua).
local NULL_MEMO = '{"data":null}'

-- Parks this job until `until_ms` for a sleep, wait or invoke it answered (its step is
-- memoised with what the step returns at that time, or null for a planned job's invoke,
-- whose hash keeps that answer): the main job waits in the ready set; a planned step's job
-- too, or ends now when that time has passed.
local function park_until(until_ms)
  if target ~= '' and until_ms <= now then
    return advance()
  end
  return continue_at(until_ms, 0)
end

-- Drops this job, the jobs of planned steps that have not ended, and the waiting main job.
local function drop_jobs()
  if redis.call('EXISTS', planned) == 1 then
    for _, step_id in ipairs(redis.call('SMEMBERS', planned)) do
      local id = run_id .. ':' .. step_id
      release_slots(id)
      redis.call('ZREM', ready, id)
      redis.call('ZREM', leased, id)
      redis.call('DEL', job_prefix .. id)
    end
    redis.call('DEL', planned)
  end
  if target ~= '' then
    release_slots(run_id)
    redis.call('ZREM', ready, run_id)
    redis.call('ZREM', leased, run_id)
    redis.call('DEL', job_prefix .. run_id)
  end
  release_slots(job_id)
  redis.call('ZREM', leased, job_id)
  redis.call('DEL', job)
end

local function finish(status, output, err)
  redis.call('HSET', run, 'status', status, 'ended', now, 'output', output, 'error', err)
  drop_jobs()
  drop_waits(run .. ':waitrefs')
  if meta[6] then clear_why(run, run_id) end
  redis.call('EXPIRE', run, ttl)
  redis.call('EXPIRE', steps, ttl)
  redis.call('EXPIRE', stack, ttl)
  -- The end carries this job's attempt: a completed function's last attempt has no step record.
  redis.call('XADD', history, '*', 'k', 'end', 'run', run_id, 'status', status,
    'output', output, 'error', err, 'ts', now, 'attempt', attempt, attempt_fields())
  return 1
end

-- Stores a step's memo; the stack keeps the order steps were first memoised in. The run
-- hash's `bytes` is the total length of the run's memos (the steps hash's values): a memo
-- that would take it over the cap fails the run instead, non-retriably and naming the cap,
-- and memoise returns false (the script then returns 3, the run failed).
local function memoise(step_id, memo)
  local total = (tonumber(redis.call('HGET', run, 'bytes')) or 0) + #memo
    - redis.call('HSTRLEN', steps, step_id)
  if state_cap > 0 and total > state_cap then
    finish('failed', '', cjson.encode({name = 'RunStateLimitError',
      message = string.format("the run's memoised state would be %d bytes, over the limit " ..
        'of %d (max_run_state_bytes)', total, state_cap), stack = ''}))
    return false
  end
  redis.call('HSET', run, 'bytes', total)
  if redis.call('HSET', steps, step_id, memo) == 1 then
    redis.call('RPUSH', stack, step_id)
  end
  return true
end
