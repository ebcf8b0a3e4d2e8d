-- A step raised: retry it at ARGV[11] while attempts remain and the error is retriable;
-- otherwise memoise the error so the function sees it, and let the run go on.
-- ARGV[7] step_id  ARGV[8] name  ARGV[9] error_json  ARGV[10] non_retriable (0|1)
-- ARGV[11] retry_at_ms
-- Returns 1 (retry scheduled) or the relocked job, 2 when the error was memoised.
local step_id, name, err = ARGV[7], ARGV[8], ARGV[9]
record_step(step_id, name, 'failed', attempt, '', err)
if ARGV[10] == '0' and attempt + 1 < max_attempts then
  return continue_at(tonumber(ARGV[11]), attempt + 1)
end
memoise(step_id, '{"error":' .. err .. '}')
local moved = advance()
if moved == 1 then return 2 end
return moved
