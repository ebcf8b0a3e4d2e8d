-- End the runs of a shard whose finish timeout has passed as failed (FinishTimeoutError):
-- drop their queued or leased jobs (main and planned steps) and record each end, as
-- cancel_run.lua does. Runs already ended are only taken out of the deadlines zset.
-- Loaded after _waits.lua, server/queue/lua/_flow.lua (leased jobs free their slots) and
-- _end_run.lua.
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
    local was_leased = drop_run_jobs(tag, leased, run_id, meta[2])
    local err = cjson.encode({name = 'FinishTimeoutError', message =
      'the run exceeded its finish timeout of ' .. (meta[4] or '?') .. ' ms', stack = ''})
    record_run_failed(run, run_id, err, now, ttl, history, meta[2], meta[3])
    out[#out + 1] = {run_id, was_leased}
  end
end
return out
