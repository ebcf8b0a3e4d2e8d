-- A step raised: retry it at ARGV[12] while attempts remain and the error is retriable;
-- otherwise memoise the error so the function sees it, and let the run go on.
-- ARGV[8] step_id  ARGV[9] name  ARGV[10] error_json  ARGV[11] non_retriable (0|1)
-- ARGV[12] retry_at_ms
-- Returns 1 (retry scheduled) or the relocked job, 2 when the error was memoised, 3 when the
-- error would take the run's state over its cap (the run failed).
local step_id, name, err = ARGV[8], ARGV[9], ARGV[10]
record_step(step_id, name, 'failed', attempt, '', err)
if ARGV[11] == '0' and attempt + 1 < max_attempts then
  return continue_at(tonumber(ARGV[12]), attempt + 1)
end
if not memoise(step_id, '{"error":' .. err .. '}') then return 3 end
local moved = advance()
if moved == 1 then return 2 end
return moved
