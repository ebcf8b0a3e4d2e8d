-- A wait-for-event step was reached: memoise it as null (what the timeout returns), park the
-- run's job in the ready set until the timeout, and store the wait entry (_waits.lua) so the
-- runner finds it by event name and index (resume_wait.lua replaces the null with the
-- event). Only the main job waits.
-- ARGV[7] step_id  ARGV[8] name  ARGV[9] timeout_until_ms
-- ARGV[10..15] the entry: waits key, field, set key, paths key, async path, entry JSON
-- Returns 1, or the relocked job when the timeout is already over; -4 from a planned step.
local step_id, name, until_ms = ARGV[7], ARGV[8], tonumber(ARGV[9])
if target ~= '' then
  return -4
end
memoise(step_id, '{"data":null}')
-- Recorded as a sleep until the timeout (history has no waiting status yet).
record_step(step_id, name, 'sleeping', attempt, '', '', until_ms)
if until_ms > now then
  add_wait(run .. ':waitrefs', ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15])
end
return continue_at(until_ms, 0)
