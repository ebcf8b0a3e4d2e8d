-- The function found steps to run in parallel: each step not yet memoised gets its own job,
-- runnable now, and the main job waits (neither leased nor ready) until the last of them
-- ends (see the prelude's advance). Planning a step that is already planned adds nothing.
-- ARGV[8..] step ids
-- Returns 1, the relocked main job when every step was already memoised, -4 when the job is
-- a planned step's own job (steps are planned by the main job only).
if target ~= '' then
  return -4
end
for i = 8, #ARGV do
  local step_id = ARGV[i]
  if redis.call('HEXISTS', steps, step_id) == 0 and redis.call('SADD', planned, step_id) == 1 then
    local id = run_id .. ':' .. step_id
    redis.call('HSET', job_prefix .. id, 'run', run_id, 'fn', meta[4], 'attempt', 0,
      'lease', '', 'step', step_id)
    redis.call('ZADD', ready, now, id)
  end
end
if redis.call('SCARD', planned) == 0 then
  return continue_at(now, 0)
end
redis.call('HSET', job, 'lease', '', 'attempt', 0)
release_slots(job_id)
redis.call('ZREM', leased, job_id)
return 1
