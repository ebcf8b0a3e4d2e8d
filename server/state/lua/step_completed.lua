-- A step returned: memoise its output, then let the run go on (see the prelude's advance).
-- ARGV[7] step_id  ARGV[8] name  ARGV[9] output_json
-- Returns 1, or the relocked job (see the prelude's continue_job).
local step_id, name, output = ARGV[7], ARGV[8], ARGV[9]
memoise(step_id, '{"data":' .. output .. '}')
record_step(step_id, name, 'completed', attempt, output, '')
return advance()
