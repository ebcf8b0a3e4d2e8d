-- An invoke step was reached: memoise the timeout's error (what the step returns unless the
-- child ends first), park the run's job until the timeout, store the wait for the child's
-- `inngest/function.finished` event (by correlation id, _waits.lua), and record the
-- `inngest/function.invoked` event for the history writer to send after its commit. All in
-- one script, so the child is started once, and only with the wait in place.
-- ARGV[7] step_id  ARGV[8] name  ARGV[9] until_ms  ARGV[10] timeout memo JSON
-- ARGV[11] events JSON (array with the invoked event)
-- ARGV[12..17] the entry: waits key, field, set key, paths key, async path, entry JSON
-- Returns 1; -4 from a planned step.
local step_id, name, until_ms = ARGV[7], ARGV[8], tonumber(ARGV[9])
if target ~= '' then
  return -4
end
memoise(step_id, ARGV[10])
record_step(step_id, name, 'sleeping', attempt, '', '', until_ms)
add_wait(run .. ':waitrefs', ARGV[12], ARGV[13], ARGV[14], ARGV[15], ARGV[16], ARGV[17])
redis.call('XADD', history, '*', 'k', 'emit', 'run', run_id, 'events', ARGV[11], 'ts', now)
return continue_at(until_ms, 0)
