-- A wait-for-event step was reached: memoise it as null (what the timeout returns), park the
-- job in the ready set until the timeout, and store the wait entry (_waits.lua) so the
-- runner finds it by event name and index (resume_wait.lua replaces the null with the
-- event). The job is the run's main job, or a planned step's (a wait in a parallel group,
-- whose entry names that job; it ends at the timeout or the match like a completed step).
-- ARGV[8] step_id  ARGV[9] name  ARGV[10] timeout_until_ms
-- ARGV[11..16] the entry: waits key, field, set key, paths key, async path, entry JSON
-- Returns 1, or the relocked job when the timeout is already over; 3 when the run's state
-- would pass its cap (the run failed).
local step_id, name, until_ms = ARGV[8], ARGV[9], tonumber(ARGV[10])
if not memoise(step_id, NULL_MEMO) then return 3 end
-- Recorded as a sleep until the timeout (history has no waiting status yet).
record_step(step_id, name, 'sleeping', attempt, '', '', until_ms)
if until_ms > now then
  add_wait(run .. ':waitrefs', ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15], ARGV[16])
end
return park_until(until_ms)
