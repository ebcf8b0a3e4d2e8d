-- A sleep step was reached: memoise it as done and schedule the run's next job at its end,
-- so no worker slot is held meanwhile.
-- ARGV[6] step_id  ARGV[7] name  ARGV[8] until_ms
-- Returns 1, or the relocked job when the sleep is already over.
local step_id, name, until_ms = ARGV[6], ARGV[7], tonumber(ARGV[8])
redis.call('HSET', steps, step_id, '{"data":null}')
record_step(step_id, name, 'sleeping', attempt, '', '')
return continue_at(until_ms, 0)
