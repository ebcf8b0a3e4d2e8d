-- Cancel a run that has not finished: drop its queued or leased jobs (the main job and those
-- of planned steps) and its waits, and record the end. Loaded after _waits.lua and
-- server/queue/lua/_flow.lua (a leased job frees its concurrency slots).
-- KEYS[1] run hash  KEYS[2] steps hash  KEYS[3] leased zset  KEYS[4] history stream
-- KEYS[5] stack list  KEYS[6] planned set
-- ARGV[1] run_id  ARGV[2] now_ms  ARGV[3] shard key tag  ARGV[4] finished-run ttl s
-- ARGV[5] job_id of the main job
-- Returns {status, was_leased}: the status after the call ('cancelled', or the terminal one
-- it already had) and 1 when a worker held one of its jobs; -1 when the run is unknown.
local run, steps, leased, history, stack, planned =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local meta = redis.call('HMGET', run, 'status', 'fn', 'app')
if not meta[1] then
  return -1
end
if meta[1] ~= 'queued' and meta[1] ~= 'running' then
  return {meta[1], 0}
end
local tag, job_id = ARGV[3], ARGV[5]
local ready = tag .. ':ready:' .. meta[2]
local ids = {job_id}
for _, step_id in ipairs(redis.call('SMEMBERS', planned)) do
  ids[#ids + 1] = ARGV[1] .. ':' .. step_id
end
local was_leased = 0
for _, id in ipairs(ids) do
  free_slots(tag .. ':job:', id)
  redis.call('ZREM', ready, id)
  if redis.call('ZREM', leased, id) == 1 then was_leased = 1 end
  redis.call('DEL', tag .. ':job:' .. id)
end
redis.call('DEL', planned)
drop_waits(run .. ':waitrefs')
clear_why(run, ARGV[1])
redis.call('HSET', run, 'status', 'cancelled', 'ended', ARGV[2])
local ttl = tonumber(ARGV[4])
redis.call('EXPIRE', run, ttl)
redis.call('EXPIRE', steps, ttl)
redis.call('EXPIRE', stack, ttl)
redis.call('XADD', history, '*', 'k', 'end', 'run', ARGV[1], 'status', 'cancelled',
  'output', '', 'error', '', 'ts', ARGV[2], 'fn', meta[2], 'app', meta[3] or '')
return {'cancelled', was_leased}
