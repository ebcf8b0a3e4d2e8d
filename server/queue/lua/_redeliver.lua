-- Prelude of release.lua and requeue_expired.lua (loaded after server/state/lua/_waits.lua,
-- _flow.lua, whose free_slots every job leaving `leased` goes through, and
-- server/state/lua/_end_run.lua):
-- a job handed back without an answer returns to its ready set after a backoff, and its run
-- fails once the job has come back more than max_redeliveries times in a row.
-- KEYS[1] leased zset  KEYS[2] history stream
-- ARGV[1] now_ms  ARGV[2] shard key tag  ARGV[3] redelivery_backoff_ms  ARGV[4] backoff_max_ms
-- ARGV[5] max_redeliveries  ARGV[6] finished-run ttl s; the script's own arguments start at
-- ARGV[7].
-- Job hash fields: `redeliveries` counts hand-backs since the job's last answer: a hand-back
-- continues the count only when the lease it ends was itself a redelivery's (lease.lua copies
-- the new lease into `redelivery_lease` when that field says 'pending'); a lease made by an
-- answer (relock, or a lease after the answer queued the job) starts it again at 1.
-- `redelivery_reason` says why the last hand-back happened.
local leased, history = KEYS[1], KEYS[2]
local now, tag = tonumber(ARGV[1]), ARGV[2]
local backoff_ms, backoff_max_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_redeliveries, ttl = tonumber(ARGV[5]), tonumber(ARGV[6])

-- Ends a queued or running run as failed with `err`: drops its jobs (main and planned, ready
-- or leased), its deadline and its waits, and records the end (which the history writer turns
-- into the run's internal events). Returns 0 when the run had already ended.
local function fail_run(run_id, fn, attempt, err)
  local run = tag .. ':run:' .. run_id
  local meta = redis.call('HMGET', run, 'status', 'app')
  if meta[1] ~= 'queued' and meta[1] ~= 'running' then
    return 0
  end
  drop_run_jobs(tag, leased, run_id, fn)
  redis.call('ZREM', tag .. ':deadlines', run_id)
  record_run_failed(run, run_id, err, ARGV[1], ttl, history, fn, meta[2], attempt or 0)
  return 1
end

-- Hands back job `id` (hash `jk`) whose lease `lease` ended without an answer. Returns 1 when
-- it was queued again, 2 when it was over the cap (its run failed, or it was dropped when the
-- run had already ended), 0 when the job is gone.
local function hand_back(id, jk, lease, reason)
  local job = redis.call('HMGET', jk, 'fn', 'run', 'attempt', 'redeliveries',
    'redelivery_lease')
  free_slots(tag .. ':job:', id)
  redis.call('ZREM', leased, id)
  if not job[1] then
    return 0
  end
  local n = 1
  if job[5] == lease then
    n = (tonumber(job[4]) or 0) + 1
  end
  if n > max_redeliveries then
    local err = cjson.encode({name = 'RedeliveryLimitError', message = 'job redelivered ' ..
      max_redeliveries .. ' times without an answer; last: ' .. reason, stack = ''})
    if fail_run(job[2], job[1], job[3], err) == 0 then
      redis.call('DEL', jk)
    end
    return 2
  end
  local delay = math.min(backoff_max_ms, backoff_ms * 2 ^ (n - 1))
  redis.call('HSET', jk, 'lease', '', 'redeliveries', n, 'redelivery_lease', 'pending',
    'redelivery_reason', reason)
  redis.call('ZADD', tag .. ':ready:' .. job[1], now + delay, id)
  return 1
end
