-- A sleep step was reached: memoise it as done and park the job at its end, so no worker
-- slot is held meanwhile. A planned step's job (a sleep in a parallel group) parks itself
-- and ends at the sleep's end like a completed step (the prelude's park_until, advance).
-- ARGV[8] step_id  ARGV[9] name  ARGV[10] until_ms
-- Returns 1, or the relocked job when the sleep is already over; 3 when the run's state would
-- pass its cap (the run failed).
local step_id, name, until_ms = ARGV[8], ARGV[9], tonumber(ARGV[10])
if not memoise(step_id, NULL_MEMO) then return 3 end
record_step(step_id, name, 'sleeping', attempt, '', '', until_ms)
return park_until(until_ms)
