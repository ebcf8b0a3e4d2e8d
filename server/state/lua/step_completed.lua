-- A step returned: memoise its output, then schedule the run's next job now.
-- ARGV[6] step_id  ARGV[7] name  ARGV[8] output_json
-- Returns 1, or the relocked job (see the prelude's continue_at).
local step_id, name, output = ARGV[6], ARGV[7], ARGV[8]
redis.call('HSET', steps, step_id, '{"data":' .. output .. '}')
record_step(step_id, name, 'completed', attempt, output, '')
return continue_at(now, 0)
