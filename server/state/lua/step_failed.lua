-- A step raised: retry it at ARGV[10] while attempts remain and the error is retriable;
-- otherwise memoise the error so the function sees it, and schedule the run now.
-- ARGV[6] step_id  ARGV[7] name  ARGV[8] error_json  ARGV[9] non_retriable (0|1)
-- ARGV[10] retry_at_ms
-- Returns 1 (retry scheduled) or the relocked job, 2 when the error was memoised.
local step_id, name, err = ARGV[6], ARGV[7], ARGV[8]
record_step(step_id, name, 'failed', attempt, '', err)
if ARGV[9] == '0' and attempt + 1 < max_attempts then
  return continue_at(tonumber(ARGV[10]), attempt + 1)
end
redis.call('HSET', steps, step_id, '{"error":' .. err .. '}')
local moved = continue_at(now, 0)
if moved == 1 then return 2 end
return moved
