-- The function raised outside a step: retry the run's job at ARGV[9] while attempts remain
-- and the error is retriable, else the run has failed.
-- ARGV[6] error_json  ARGV[7] non_retriable (0|1)  ARGV[8] step id recorded for the attempt
-- ARGV[9] retry_at_ms
-- Returns 1 (retry scheduled), 3 when the run failed.
local err = ARGV[6]
record_step(ARGV[8], 'function', 'failed', attempt, '', err)
if ARGV[7] == '0' and attempt + 1 < max_attempts then
  return continue_at(tonumber(ARGV[9]), attempt + 1)
end
finish('failed', '', err)
return 3
