-- An awaited event matched: memoise the step's result and make the run's job due now.
-- Fenced on the job still parked at the wait's timeout (score = until, no lease), so a
-- timeout that already came due and a match cannot both win; the entry is removed either way.
-- Loaded after _waits.lua.
-- KEYS[1] waits hash  KEYS[2] the entry's index or scan set  KEYS[3] run hash
-- KEYS[4] steps hash  KEYS[5] job hash  KEYS[6] ready zset of the function
-- KEYS[7] the run's waitrefs hash  KEYS[8] history stream
-- ARGV[1] field  ARGV[2] run_id  ARGV[3] step_id  ARGV[4] memo JSON  ARGV[5] until_ms
-- ARGV[6] now_ms  ARGV[7] step name; the step's end for history: ARGV[8] status
-- ('completed' or 'failed'), ARGV[9] output JSON, ARGV[10] error JSON
-- Returns 1 resumed, 0 the wait is over (timed out, resumed, or the run moved on).
local waits, set, run, steps, job, ready, refs, history =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local field, run_id, step_id, memo, until_ms, now =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
if redis.call('HEXISTS', waits, field) == 0 then
  return 0
end
remove_wait(refs, waits, field, set)
local score = redis.call('ZSCORE', ready, run_id)
if redis.call('HGET', run, 'status') ~= 'running' or not score
    or tonumber(score) ~= tonumber(until_ms) or tonumber(score) <= now
    or (redis.call('HGET', job, 'lease') or '') ~= '' then
  return 0
end
redis.call('HSET', steps, step_id, memo)
redis.call('ZADD', ready, now, run_id)
-- The wait was recorded as sleeping until its timeout: its end, with what it returned.
redis.call('XADD', history, '*', 'k', 'step', 'run', run_id, 'step', step_id, 'name', ARGV[7],
  'attempt', 0, 'status', ARGV[8], 'output', ARGV[9], 'error', ARGV[10], 'ts', now,
  'fn', redis.call('HGET', run, 'fn') or '', 'app', redis.call('HGET', run, 'app') or '')
return 1
