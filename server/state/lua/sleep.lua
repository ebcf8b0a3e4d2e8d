-- A sleep step was reached: memoise it as done and schedule the run's next job at its end,
-- so no worker slot is held meanwhile. Only the main job sleeps (drivers refuse a sleep from
-- a planned step's job).
-- ARGV[7] step_id  ARGV[8] name  ARGV[9] until_ms
-- Returns 1, or the relocked job when the sleep is already over.
local step_id, name, until_ms = ARGV[7], ARGV[8], tonumber(ARGV[9])
memoise(step_id, '{"data":null}')
record_step(step_id, name, 'sleeping', attempt, '', '', until_ms)
return continue_at(until_ms, 0)
