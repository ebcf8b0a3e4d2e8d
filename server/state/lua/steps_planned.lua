-- The function found steps to run in parallel: each step not yet memoised gets its own job,
-- and the main job waits (neither leased nor ready) until the last of them ends, or the
-- first in a race (see _waits.lua's end_planned). A step to run gets a job runnable now; a
-- parked sleep, wait or invoke of the group gets a job parked at its end, made here as
-- sleep.lua, wait_for_event.lua and invoke.lua make theirs: memoised with its timeout's
-- answer, its wait entry naming the job, the invoked event recorded. Planning a step that is
-- already planned adds nothing.
-- ARGV[8] race ('1': the first step to end wakes the main job)
-- ARGV[9] parked steps, JSON [{step, name, until, memo, wait: [waits key, field, set key,
--   paths key, async path, entry JSON] or null, events: invoked events JSON or null}]
-- ARGV[10..] ids of the steps to run
-- Returns 1, the relocked main job when every step was already memoised, -4 when the job is
-- a planned step's own job (steps are planned by the main job only); 3 when a memo would take
-- the run's state over its cap (the run failed).
if target ~= '' then
  return -4
end
local race = ARGV[8] == '1' and '1' or '0'
local function new_job(step_id, at)
  local id = run_id .. ':' .. step_id
  redis.call('HSET', job_prefix .. id, 'run', run_id, 'fn', meta[4], 'attempt', 0,
    'lease', '', 'step', step_id, 'race', race)
  redis.call('ZADD', ready, at, id)
  return job_prefix .. id
end
-- Memos first: one over the state cap fails the run before any wait or invoke is made. A
-- parked step is memoised as null while it waits (what the SDKs see of it when another
-- step of the group runs, or when it loses a race); its job keeps the answer it gets at its
-- time (step_completed.lua).
local fresh = {}
for _, op in ipairs(cjson.decode(ARGV[9])) do
  if redis.call('HEXISTS', steps, op.step) == 0 and redis.call('SADD', planned, op.step) == 1 then
    local over = op['until'] <= now
    if not memoise(op.step, over and op.memo or NULL_MEMO) then return 3 end
    fresh[#fresh + 1] = op
  end
end
for _, op in ipairs(fresh) do
  record_step(op.step, op.name, 'sleeping', 0, '', '', op['until'])
  if op['until'] <= now then
    redis.call('SREM', planned, op.step)  -- over already: the memo is its answer
  else
    if type(op.wait) == 'table' then
      local w = op.wait
      add_wait(run .. ':waitrefs', w[1], w[2], w[3], w[4], w[5], w[6])
    end
    if type(op.events) == 'string' then
      redis.call('XADD', history, '*', 'k', 'emit', 'run', run_id, 'events', op.events,
        'ts', now)
    end
    redis.call('HSET', new_job(op.step, op['until']), 'memo', op.memo)
  end
end
for i = 10, #ARGV do
  local step_id = ARGV[i]
  if redis.call('HEXISTS', steps, step_id) == 0 and redis.call('SADD', planned, step_id) == 1 then
    new_job(step_id, now)
  end
end
if redis.call('SCARD', planned) == 0 then
  return continue_at(now, 0)
end
redis.call('HSET', job, 'lease', '', 'attempt', 0)
release_slots(job_id)
redis.call('ZREM', leased, job_id)
return 1
