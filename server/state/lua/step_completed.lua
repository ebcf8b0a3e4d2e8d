-- A step returned: memoise its output, then let the run go on (see the prelude's advance).
-- A parked step's job (a parallel group's sleep, wait or invoke, memoised as null while it
-- waits) that came due ends with the answer its hash keeps for that time (`memo`: the
-- invoke's timeout error); the executor sends it as this step with a null output
-- (server/executor/opcodes.py ended_step).
-- ARGV[8] step_id  ARGV[9] name  ARGV[10] output_json
-- Returns 1, or the relocked job (see the prelude's continue_job); 3 when the memo would take
-- the run's state over its cap (the run failed, see the prelude's memoise).
local step_id, name, output = ARGV[8], ARGV[9], ARGV[10]
local parked = target == step_id and redis.call('HGET', job, 'memo')
if parked then
  if not memoise(step_id, parked) then return 3 end
  local answer = cjson.decode(parked)
  if type(answer) == 'table' and type(answer.error) == 'table' then
    record_step(step_id, name, 'failed', attempt, '', cjson.encode(answer.error))
  else
    record_step(step_id, name, 'completed', attempt, 'null', '')
  end
  return advance()
end
if not memoise(step_id, '{"data":' .. output .. '}') then return 3 end
record_step(step_id, name, 'completed', attempt, output, '')
return advance()
