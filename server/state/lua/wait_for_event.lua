-- A wait-for-event step was reached: memoise it as null (what the timeout returns), park the
-- run's job in the ready set until the timeout, and register the wait under the event's name
-- so the runner finds it without scanning (resume_wait.lua replaces the null with the event).
-- Only the main job waits.
-- KEYS[10] waits hash of the event name (run id -> JSON entry)
-- ARGV[7] step_id  ARGV[8] name  ARGV[9] entry JSON {step, fn, if, event, until}
-- ARGV[10] timeout_until_ms
-- Returns 1, or the relocked job when the timeout is already over; -4 from a planned step.
local waits = KEYS[10]
local step_id, name, entry, until_ms = ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10])
if target ~= '' then
  return -4
end
memoise(step_id, '{"data":null}')
-- Recorded as a sleep until the timeout (history has no waiting status yet).
record_step(step_id, name, 'sleeping', attempt, '', '', until_ms)
if until_ms > now then
  redis.call('HSET', waits, run_id, entry)
end
return continue_at(until_ms, 0)
