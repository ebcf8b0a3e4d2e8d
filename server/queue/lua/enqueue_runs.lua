-- Create runs with their first jobs, skipping runs that already exist (idempotent: the runner
-- may see an event twice after a crash, and run ids are derived from event and function).
-- Many runs in one call, all in this shard.
-- KEYS[1] history stream of the shard
-- ARGV[1] shard key tag  ARGV[2] now_ms
-- ARGV[3..] groups of eleven per run: run_id, function_id, app_id, event_json, event_id,
-- max_attempts, available_at_ms, job_id, start_by (ms, 0: no start timeout), finish_ms (the
-- finish timeout, 0: none; lease.lua turns it into `finish_by` when the run starts), waits
-- (its cancel-on entries: a JSON array of [waits key, field, set key, paths key, path,
-- entry], or ''). Loaded after server/state/lua/_waits.lua.
-- Returns a list with 1 for each run created and 0 for each that already existed.
local history = KEYS[1]
local tag, now = ARGV[1], ARGV[2]
local created = {}
for i = 3, #ARGV, 11 do
  local run_id, fn, app = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local run = tag .. ':run:' .. run_id
  if redis.call('EXISTS', run) == 1 then
    created[#created + 1] = 0
  else
    local job_id = ARGV[i + 7]
    redis.call('HSET', run, 'fn', fn, 'app', app, 'event', ARGV[i + 3], 'status', 'queued',
      'created', now, 'max', ARGV[i + 5], 'start_by', ARGV[i + 8], 'finish_ms', ARGV[i + 9])
    redis.call('HSET', tag .. ':job:' .. job_id, 'run', run_id, 'fn', fn, 'attempt', 0,
      'lease', '')
    redis.call('ZADD', tag .. ':ready:' .. fn, ARGV[i + 6], job_id)
    if ARGV[i + 10] ~= '' then
      for _, w in ipairs(cjson.decode(ARGV[i + 10])) do
        add_wait(run .. ':waitrefs', w[1], w[2], w[3], w[4], w[5], w[6])
      end
    end
    redis.call('XADD', history, '*', 'k', 'run', 'run', run_id, 'fn', fn, 'app', app,
      'event', ARGV[i + 4], 'ts', now)
    created[#created + 1] = 1
  end
end
return created
