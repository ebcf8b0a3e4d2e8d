-- An awaited event matched: memoise the step's result and make the run's job due now, or,
-- when the waiting job is a planned step's (a wait or invoke in a parallel group), end that
-- job like a completed step (_waits.lua's end_planned: the last of the group, or the first
-- in a race, makes the main job due now).
-- Fenced on the job still parked at the wait's timeout (score = until, no lease), so a
-- timeout that already came due and a match cannot both win; the entry is removed either way.
-- Loaded after _waits.lua.
-- KEYS[1] waits hash  KEYS[2] the entry's index or scan set  KEYS[3] run hash
-- KEYS[4] steps hash  KEYS[5] the waiting job's hash  KEYS[6] ready zset of the function
-- KEYS[7] the run's waitrefs hash  KEYS[8] history stream  KEYS[9] stack list
-- KEYS[10] the run's planned set  KEYS[11] leased zset
-- ARGV[1] field  ARGV[2] run_id  ARGV[3] step_id  ARGV[4] memo JSON  ARGV[5] until_ms
-- ARGV[6] now_ms  ARGV[7] step name; the step's end for history: ARGV[8] status
-- ('completed' or 'failed'), ARGV[9] output JSON, ARGV[10] error JSON
-- ARGV[11] max run state bytes (0: no cap)  ARGV[12] finished-run ttl s
-- ARGV[13] the waiting job's id (the run id for the main job)  ARGV[14] job key prefix
-- Returns 1 resumed, 0 the wait is over (timed out, resumed, or the run moved on), 2 the memo
-- would take the run's state over its cap: the run failed (RunStateLimitError, as the
-- prelude's memoise).
local waits, set, run, steps, job, ready, refs, history, stack, planned, leased =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11]
local field, run_id, step_id, memo, until_ms, now =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local job_id, job_prefix = ARGV[13] or run_id, ARGV[14] or ''
if job_id == '' then job_id = run_id end
if redis.call('HEXISTS', waits, field) == 0 then
  return 0
end
remove_wait(refs, waits, field, set)
local score = redis.call('ZSCORE', ready, job_id)
if redis.call('HGET', run, 'status') ~= 'running' or not score
    or tonumber(score) ~= tonumber(until_ms) or tonumber(score) <= now
    or (redis.call('HGET', job, 'lease') or '') ~= '' then
  return 0
end
local fn, app = redis.call('HGET', run, 'fn') or '', redis.call('HGET', run, 'app') or ''
local total = (tonumber(redis.call('HGET', run, 'bytes')) or 0) + #memo
  - redis.call('HSTRLEN', steps, step_id)
local cap, ttl = tonumber(ARGV[11]) or 0, tonumber(ARGV[12])
if cap > 0 and total > cap then
  local err = cjson.encode({name = 'RunStateLimitError',
    message = string.format("the run's memoised state would be %d bytes, over the limit " ..
      'of %d (max_run_state_bytes)', total, cap), stack = ''})
  redis.call('ZREM', ready, job_id)
  redis.call('DEL', job)
  if job_id ~= run_id then
    -- The run ends: the group's other parked jobs and the parked main job go too (a leased
    -- one is dropped when its answer finds the run failed).
    for _, other in ipairs(redis.call('SMEMBERS', planned)) do
      local id = run_id .. ':' .. other
      if (redis.call('HGET', job_prefix .. id, 'lease') or '') == '' then
        redis.call('ZREM', ready, id)
        redis.call('DEL', job_prefix .. id)
      end
    end
    redis.call('DEL', planned, job_prefix .. run_id)
  end
  drop_waits(refs)
  redis.call('HSET', run, 'status', 'failed', 'ended', now, 'output', '', 'error', err)
  redis.call('EXPIRE', run, ttl)
  redis.call('EXPIRE', steps, ttl)
  redis.call('EXPIRE', stack, ttl)
  redis.call('XADD', history, '*', 'k', 'end', 'run', run_id, 'status', 'failed',
    'output', '', 'error', err, 'ts', now, 'fn', fn, 'app', app)
  return 2
end
redis.call('HSET', run, 'bytes', total)
redis.call('HSET', steps, step_id, memo)
if job_id == run_id then
  redis.call('ZADD', ready, now, run_id)
else
  redis.call('ZREM', ready, job_id)
  if end_planned(job, step_id, planned, steps, refs, ready, leased, job_prefix, run_id) then
    redis.call('ZADD', ready, now, run_id)
  end
end
-- The wait was recorded as sleeping until its timeout: its end, with what it returned.
redis.call('XADD', history, '*', 'k', 'step', 'run', run_id, 'step', step_id, 'name', ARGV[7],
  'attempt', 0, 'status', ARGV[8], 'output', ARGV[9], 'error', ARGV[10], 'ts', now,
  'fn', fn, 'app', app)
return 1
