-- The function raised outside a step: retry the job at ARGV[10] while attempts remain and the
-- error is retriable, else the run has failed.
-- ARGV[7] error_json  ARGV[8] non_retriable (0|1)  ARGV[9] step id recorded for the attempt
-- ARGV[10] retry_at_ms
-- Returns 1 (retry scheduled) or the relocked job, 3 when the run failed.
local err = ARGV[7]
record_step(ARGV[9], 'function', 'failed', attempt, '', err)
if ARGV[8] == '0' and attempt + 1 < max_attempts then
  return continue_at(tonumber(ARGV[10]), attempt + 1)
end
finish('failed', '', err)
return 3
