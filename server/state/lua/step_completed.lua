-- A step returned: memoise its output, then let the run go on (see the prelude's advance).
-- ARGV[8] step_id  ARGV[9] name  ARGV[10] output_json
-- Returns 1, or the relocked job (see the prelude's continue_job); 3 when the memo would take
-- the run's state over its cap (the run failed, see the prelude's memoise).
local step_id, name, output = ARGV[8], ARGV[9], ARGV[10]
if not memoise(step_id, '{"data":' .. output .. '}') then return 3 end
record_step(step_id, name, 'completed', attempt, output, '')
return advance()
