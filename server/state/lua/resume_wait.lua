-- An awaited event matched: memoise it for the wait step and make the run's job due now.
-- Fenced on the job still parked at the wait's timeout (score = until, no lease), so a
-- timeout that already came due and a match cannot both win; a stale entry is dropped.
-- KEYS[1] waits hash  KEYS[2] run hash  KEYS[3] steps hash  KEYS[4] job hash
-- KEYS[5] ready zset of the function
-- ARGV[1] run_id  ARGV[2] step_id  ARGV[3] memo JSON  ARGV[4] until_ms  ARGV[5] now_ms
-- Returns 1 resumed, 0 the wait is over (timed out, resumed, or the run moved on).
local waits, run, steps, job, ready = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local run_id, step_id, memo, until_ms, now =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if redis.call('HDEL', waits, run_id) == 0 then
  return 0
end
local score = redis.call('ZSCORE', ready, run_id)
if redis.call('HGET', run, 'status') ~= 'running' or not score
    or tonumber(score) ~= tonumber(until_ms) or tonumber(score) <= now
    or (redis.call('HGET', job, 'lease') or '') ~= '' then
  return 0
end
redis.call('HSET', steps, step_id, memo)
redis.call('ZADD', ready, now, run_id)
return 1
