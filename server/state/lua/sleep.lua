-- A sleep step was reached: memoise it as done and schedule the run's next job at its end,
-- so no worker slot is held meanwhile. Only the main job sleeps (drivers refuse a sleep from
-- a planned step's job).
-- ARGV[8] step_id  ARGV[9] name  ARGV[10] until_ms
-- Returns 1, or the relocked job when the sleep is already over; 3 when the run's state would
-- pass its cap (the run failed).
local step_id, name, until_ms = ARGV[8], ARGV[9], tonumber(ARGV[10])
if not memoise(step_id, '{"data":null}') then return 3 end
record_step(step_id, name, 'sleeping', attempt, '', '', until_ms)
return continue_at(until_ms, 0)
