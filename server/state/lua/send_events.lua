-- A send-event step: memoise its result ({"ids": [...]}) and record the events for the
-- history writer to send after its commit, in one script, so a replay or a retried answer
-- never sends them twice. Then the run goes on (see the prelude's advance).
-- ARGV[8] step_id  ARGV[9] name  ARGV[10] output JSON {"ids": [...]}  ARGV[11] events JSON
-- Returns 1, or the relocked job (see the prelude's continue_job); 3 when the run's state
-- would pass its cap (the run failed, nothing sent).
local step_id, name, output = ARGV[8], ARGV[9], ARGV[10]
if not memoise(step_id, '{"data":' .. output .. '}') then return 3 end
record_step(step_id, name, 'completed', attempt, output, '')
redis.call('XADD', history, '*', 'k', 'emit', 'run', run_id, 'events', ARGV[11], 'ts', now)
return advance()
