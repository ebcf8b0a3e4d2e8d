-- Cancel a run that has not finished: drop its queued or leased job and record the end.
-- KEYS[1] run hash  KEYS[2] steps hash  KEYS[3] leased zset  KEYS[4] history stream
-- ARGV[1] run_id  ARGV[2] now_ms  ARGV[3] shard key tag  ARGV[4] finished-run ttl s
-- ARGV[5] job_id
-- Returns {status, was_leased}: the status after the call ('cancelled', or the terminal one
-- it already had) and 1 when a worker held the job; -1 when the run is unknown.
local run, steps, leased, history = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local meta = redis.call('HMGET', run, 'status', 'fn')
if not meta[1] then
  return -1
end
if meta[1] ~= 'queued' and meta[1] ~= 'running' then
  return {meta[1], 0}
end
local tag, job_id = ARGV[3], ARGV[5]
redis.call('HSET', run, 'status', 'cancelled', 'ended', ARGV[2])
redis.call('ZREM', ARGV[3] .. ':ready:' .. meta[2], job_id)
local was_leased = redis.call('ZREM', leased, job_id)
redis.call('DEL', tag .. ':job:' .. job_id)
redis.call('EXPIRE', run, tonumber(ARGV[4]))
redis.call('EXPIRE', steps, tonumber(ARGV[4]))
redis.call('XADD', history, '*', 'k', 'end', 'run', ARGV[1], 'status', 'cancelled',
  'output', '', 'error', '', 'ts', ARGV[2])
return {'cancelled', was_leased}
