-- Prelude of every opcode script (prepended by the loader): fencing and the shared moves.
-- KEYS[1] run hash  KEYS[2] steps hash  KEYS[3] job hash  KEYS[4] leased zset
-- KEYS[5] ready zset of the function  KEYS[6] history stream  KEYS[7] lease counter
-- ARGV[1] job_id  ARGV[2] lease_id  ARGV[3] now_ms  ARGV[4] relock expiry ms (0: never)
-- ARGV[5] finished-run ttl s; the script's own arguments start at ARGV[6].
-- Failures: -2 the lease is stale (result dropped), -3 the run is no longer running.
local run, steps, job, leased, ready, history, counter =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local job_id, lease_id, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local relock_expires, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local held = redis.call('HMGET', job, 'lease', 'attempt', 'run')
if lease_id == '' or held[1] ~= lease_id then
  return -2
end
local attempt = tonumber(held[2])
local run_id = held[3]
local meta = redis.call('HMGET', run, 'status', 'max', 'event')
if meta[1] ~= 'running' then
  redis.call('ZREM', leased, job_id)
  redis.call('DEL', job)
  return -3
end
local max_attempts = tonumber(meta[2])

local function record_step(step_id, name, status, step_attempt, output, err)
  redis.call('XADD', history, '*', 'k', 'step', 'run', run_id, 'step', step_id, 'name', name,
    'attempt', step_attempt, 'status', status, 'output', output, 'error', err, 'ts', now)
end

-- Schedules the job's next attempt at `at`. When it is due now and the caller can take it,
-- the job stays leased under a new lease id and its payload is returned, saving a lease
-- round trip between steps.
local function continue_at(at, next_attempt)
  if relock_expires > 0 and at <= now then
    local lease = tostring(redis.call('INCR', counter))
    redis.call('HSET', job, 'lease', lease, 'attempt', next_attempt)
    redis.call('ZADD', leased, relock_expires, job_id)
    return {lease, next_attempt, max_attempts, meta[3], redis.call('HGETALL', steps)}
  end
  redis.call('HSET', job, 'lease', '', 'attempt', next_attempt)
  redis.call('ZREM', leased, job_id)
  redis.call('ZADD', ready, at, job_id)
  return 1
end

local function finish(status, output, err)
  redis.call('HSET', run, 'status', status, 'ended', now, 'output', output, 'error', err)
  redis.call('ZREM', leased, job_id)
  redis.call('DEL', job)
  redis.call('EXPIRE', run, ttl)
  redis.call('EXPIRE', steps, ttl)
  redis.call('XADD', history, '*', 'k', 'end', 'run', run_id, 'status', status,
    'output', output, 'error', err, 'ts', now)
  return 1
end
