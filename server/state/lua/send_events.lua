-- A send-event step: memoise its result ({"ids": [...]}) and record the events for the
-- history writer to send after its commit, in one script, so a replay or a retried answer
-- never sends them twice. Then the run goes on (see the prelude's advance).
-- ARGV[7] step_id  ARGV[8] name  ARGV[9] output JSON {"ids": [...]}  ARGV[10] events JSON
-- Returns 1, or the relocked job (see the prelude's continue_job).
local step_id, name, output = ARGV[7], ARGV[8], ARGV[9]
memoise(step_id, '{"data":' .. output .. '}')
record_step(step_id, name, 'completed', attempt, output, '')
redis.call('XADD', history, '*', 'k', 'emit', 'run', run_id, 'events', ARGV[10], 'ts', now)
return advance()
