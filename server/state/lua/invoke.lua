-- An invoke step was reached: memoise the timeout's error (what the step returns unless the
-- child ends first), park the job until the timeout, store the wait for the child's
-- `inngest/function.finished` event (by correlation id, _waits.lua), and record the
-- `inngest/function.invoked` event for the history writer to send after its commit. All in
-- one script, so the child is started once, and only with the wait in place. The job is the
-- run's main job or a planned step's (an invoke in a parallel group; see wait_for_event.lua).
-- ARGV[8] step_id  ARGV[9] name  ARGV[10] until_ms  ARGV[11] timeout memo JSON
-- ARGV[12] events JSON (array with the invoked event)
-- ARGV[13..18] the entry: waits key, field, set key, paths key, async path, entry JSON
-- Returns 1; 3 when the run's state would pass its cap (the run failed, no child started).
local step_id, name, until_ms = ARGV[8], ARGV[9], tonumber(ARGV[10])
-- A planned step's job (an invoke in a parallel group) is memoised as null while it waits
-- and keeps the timeout's error for its time (step_completed.lua), as steps_planned.lua does.
if target ~= '' and until_ms > now then
  if not memoise(step_id, NULL_MEMO) then return 3 end
  redis.call('HSET', job, 'memo', ARGV[11])
elseif not memoise(step_id, ARGV[11]) then
  return 3
end
record_step(step_id, name, 'sleeping', attempt, '', '', until_ms)
add_wait(run .. ':waitrefs', ARGV[13], ARGV[14], ARGV[15], ARGV[16], ARGV[17], ARGV[18])
redis.call('XADD', history, '*', 'k', 'emit', 'run', run_id, 'events', ARGV[12], 'ts', now)
return park_until(until_ms)
