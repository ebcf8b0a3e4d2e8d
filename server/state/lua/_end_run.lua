-- Ending a queued or running run as failed from outside its attempt (a timeout, the
-- redelivery cap), shared by lease.lua, time_out_runs.lua and server/queue/lua/_redeliver.lua.
-- Loaded after _waits.lua and server/queue/lua/_flow.lua.

-- Drops run `run_id`'s jobs (its main job and its planned steps', ready or leased, their
-- slots freed) and its planned set. Returns 1 when one of them was leased, else 0.
local function drop_run_jobs(tag, leased, run_id, fn)
  local planned = tag .. ':run:' .. run_id .. ':planned'
  local ids = {run_id}
  for _, step_id in ipairs(redis.call('SMEMBERS', planned)) do
    ids[#ids + 1] = run_id .. ':' .. step_id
  end
  local was_leased = 0
  for _, id in ipairs(ids) do
    free_slots(tag .. ':job:', id)
    redis.call('ZREM', tag .. ':ready:' .. fn, id)
    if redis.call('ZREM', leased, id) == 1 then was_leased = 1 end
    redis.call('DEL', tag .. ':job:' .. id)
  end
  redis.call('DEL', planned)
  return was_leased
end

-- Marks run hash `rk` failed with `err` at `now` (its hash and memos expire after `ttl`),
-- drops its waits and `why`, and records the end on `history`, which the history writer
-- turns into the run's internal events; `attempt` is added to the record when given.
local function record_run_failed(rk, run_id, err, now, ttl, history, fn, app, attempt)
  drop_waits(rk .. ':waitrefs')
  clear_why(rk, run_id)
  redis.call('HSET', rk, 'status', 'failed', 'ended', now, 'error', err)
  redis.call('EXPIRE', rk, ttl)
  redis.call('EXPIRE', rk .. ':steps', ttl)
  redis.call('EXPIRE', rk .. ':stack', ttl)
  if attempt then
    redis.call('XADD', history, '*', 'k', 'end', 'run', run_id, 'status', 'failed',
      'output', '', 'error', err, 'ts', now, 'fn', fn, 'app', app or '', 'attempt', attempt)
  else
    redis.call('XADD', history, '*', 'k', 'end', 'run', run_id, 'status', 'failed',
      'output', '', 'error', err, 'ts', now, 'fn', fn, 'app', app or '')
  end
end
