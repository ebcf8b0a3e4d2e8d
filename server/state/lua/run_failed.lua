-- The function raised outside a step: retry the job at ARGV[11] while attempts remain and the
-- error is retriable, else the run has failed.
-- ARGV[8] error_json  ARGV[9] non_retriable (0|1)  ARGV[10] step id recorded for the attempt
-- ARGV[11] retry_at_ms
-- Returns 1 (retry scheduled) or the relocked job, 3 when the run failed.
local err = ARGV[8]
record_step(ARGV[10], 'function', 'failed', attempt, '', err)
if ARGV[9] == '0' and attempt + 1 < max_attempts then
  return continue_at(tonumber(ARGV[11]), attempt + 1)
end
finish('failed', '', err)
return 3
