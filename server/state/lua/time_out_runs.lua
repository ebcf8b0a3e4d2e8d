-- End the runs of a shard whose finish timeout has passed as failed (FinishTimeoutError):
-- drop their queued or leased jobs (main and planned steps) and record each end, as
-- cancel_run.lua does. Runs already ended are only taken out of the deadlines zset.
-- Loaded after _waits.lua and server/queue/lua/_flow.lua (leased jobs free their slots).
-- KEYS[1] deadlines zset  KEYS[2] leased zset  KEYS[3] history stream
-- ARGV[1] now_ms  ARGV[2] shard key tag  ARGV[3] finished-run ttl s  ARGV[4] most runs per call
-- Returns a list of {run_id, was_leased} for each run it failed (1 when a worker held a job).
local deadlines, leased, history = KEYS[1], KEYS[2], KEYS[3]
local now, tag, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
for _, run_id in ipairs(redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, ARGV[4])) do
  redis.call('ZREM', deadlines, run_id)
  local run = tag .. ':run:' .. run_id
  local meta = redis.call('HMGET', run, 'status', 'fn', 'app', 'finish_ms')
  if meta[1] == 'queued' or meta[1] == 'running' then
    local planned = run .. ':planned'
    local ids = {run_id}
    for _, step_id in ipairs(redis.call('SMEMBERS', planned)) do
      ids[#ids + 1] = run_id .. ':' .. step_id
    end
    local was_leased = 0
    for _, id in ipairs(ids) do
      free_slots(tag .. ':job:', id)
      redis.call('ZREM', tag .. ':ready:' .. meta[2], id)
      if redis.call('ZREM', leased, id) == 1 then was_leased = 1 end
      redis.call('DEL', tag .. ':job:' .. id)
    end
    redis.call('DEL', planned)
    drop_waits(run .. ':waitrefs')
    clear_why(run, run_id)
    local err = cjson.encode({name = 'FinishTimeoutError', message =
      'the run exceeded its finish timeout of ' .. (meta[4] or '?') .. ' ms', stack = ''})
    redis.call('HSET', run, 'status', 'failed', 'ended', now, 'error', err)
    redis.call('EXPIRE', run, ttl)
    redis.call('EXPIRE', run .. ':steps', ttl)
    redis.call('EXPIRE', run .. ':stack', ttl)
    redis.call('XADD', history, '*', 'k', 'end', 'run', run_id, 'status', 'failed',
      'output', '', 'error', err, 'ts', now, 'fn', meta[2], 'app', meta[3] or '')
    out[#out + 1] = {run_id, was_leased}
  end
end
return out
