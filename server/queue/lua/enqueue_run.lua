-- Create a run and queue its first job, unless the run already exists (idempotent: the runner
-- may see an event twice after a crash, and run ids are derived from event and function).
-- KEYS[1] run hash  KEYS[2] job hash  KEYS[3] ready zset of the function  KEYS[4] history stream
-- ARGV[1] run_id  ARGV[2] function_id  ARGV[3] app_id  ARGV[4] event_json  ARGV[5] event_id
-- ARGV[6] max_attempts  ARGV[7] now_ms  ARGV[8] available_at_ms  ARGV[9] job_id
-- Returns 1 when created, 0 when the run already existed.
local run, job, ready, history = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', run) == 1 then
  return 0
end
redis.call('HSET', run, 'fn', ARGV[2], 'app', ARGV[3], 'event', ARGV[4], 'status', 'queued',
  'created', ARGV[7], 'max', ARGV[6])
redis.call('HSET', job, 'run', ARGV[1], 'fn', ARGV[2], 'attempt', 0, 'lease', '')
redis.call('ZADD', ready, ARGV[8], ARGV[9])
redis.call('XADD', history, '*', 'k', 'run', 'run', ARGV[1], 'fn', ARGV[2], 'app', ARGV[3],
  'event', ARGV[5], 'ts', ARGV[7])
return 1
