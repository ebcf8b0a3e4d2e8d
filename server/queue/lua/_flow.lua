-- Prelude of flow control (issue 12), loaded before every script that leases a job, creates a
-- run, or takes a job out of the leased zset. No KEYS of its own: the keys it touches are
-- the run's flow keys, built by server/keys.py in the run's shard and stored on the run hash
-- (`flow`) and the job hash (`slots`, `parked`), so they share the script's hash tag.
-- Concurrency: a job holding slots lists them in its hash's `slots` ("<held> <waiting> ..."),
-- members of each key's held zset (scored by lease expiry when taken, re-checked against the
-- leased zset once past it). A job blocked by a full key waits in that key's waiting zset
-- (scored by its ready score) and stays in its ready set (so cancel and bulk cancel still find
-- it) at PARKED, where the lease scan never meets it, or, for a queued run with a start
-- timeout, just past its `start_by`, where the scan fails it. Its hash's `parked` names the
-- ready set while it waits. Freeing a slot wakes the first waiter.
local PARKED = 9e15

-- Slots of `held` taken now. A member whose recorded expiry has passed is kept only while
-- it is still in `leased` (a lost release can never hold a slot for good).
local function held_count(held, leased_key, now_ms)
  local stale = redis.call('ZRANGEBYSCORE', held, '-inf', now_ms)
  for _, m in ipairs(stale) do
    local exp = redis.call('ZSCORE', leased_key, m)
    if exp then
      redis.call('ZADD', held, math.max(tonumber(exp), now_ms + 1), m)
    else
      redis.call('ZREM', held, m)
    end
  end
  return redis.call('ZCARD', held)
end

-- Moves the first live waiter of `waiting` back to its ready set with its original score.
-- Returns 1 when one was woken, 0 when none waits.
local function wake_one(waiting, job_prefix)
  while true do
    local first = redis.call('ZPOPMIN', waiting)
    if not first[1] then
      return 0
    end
    local id, score = first[1], first[2]
    local jk = job_prefix .. id
    local ready = redis.call('HGET', jk, 'parked')
    if ready then
      if redis.call('ZSCORE', ready, id) then
        redis.call('HDEL', jk, 'parked')
        redis.call('ZADD', ready, score, id)
        return 1
      end
    end
  end
end

-- Frees the concurrency slots job `id` holds (none: one HGET) and wakes one waiter per slot.
-- Every script that takes a job out of the leased zset calls this first.
local function free_slots(job_prefix, id)
  local jk = job_prefix .. id
  local slots = redis.call('HGET', jk, 'slots')
  if not slots then
    return
  end
  redis.call('HDEL', jk, 'slots')
  for held, waiting in string.gmatch(slots, '(%S+) (%S+)') do
    redis.call('ZREM', held, id)
    wake_one(waiting, job_prefix)
  end
end

-- GCRA (generic cell rate algorithm) over the theoretical arrival time kept in `key`:
-- `limit` per `period` ms, `burst` at once. Returns 0 when allowed now (and counted), else
-- the time (ms) it will be; `reserve` counts it at that time anyway (throttle: the caller
-- is scheduled then, so later callers queue behind it in order).
local function gcra(key, now_ms, limit, period, burst, reserve)
  local emission = period / math.max(limit, 1)
  local tat = math.max(tonumber(redis.call('GET', key)) or now_ms, now_ms)
  local new_tat = tat + emission
  local allow_at = new_tat - emission * math.max(burst, 1)
  if allow_at <= now_ms or reserve then
    redis.call('SET', key, string.format('%.3f', new_tat), 'PX',
      math.ceil(new_tat - now_ms) + 1000)
  end
  if allow_at <= now_ms then
    return 0
  end
  return math.ceil(allow_at)
end

-- ISO-8601 UTC of a time in ms (Redis' Lua has no os.date).
local function iso(ms)
  ms = math.floor(ms)
  local s = math.floor(ms / 1000)
  local days, rem = math.floor(s / 86400), s % 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d, math.floor(rem / 3600),
    math.floor(rem % 3600 / 60), rem % 60, ms % 1000)
end

-- Says what holds a queued run (`why`), and counts it in the function's waiting set for
-- that reason (`waiting`, the plait_runs_waiting gauge).
local function set_why(rk, run_id, text, waiting)
  local before = redis.call('HGET', rk, 'whyk')
  if before and before ~= waiting then
    redis.call('SREM', before, run_id)
  end
  redis.call('HSET', rk, 'why', text, 'whyk', waiting)
  redis.call('SADD', waiting, run_id)
end

local function clear_why(rk, run_id)
  local before = redis.call('HGET', rk, 'whyk')
  if before then
    redis.call('SREM', before, run_id)
    redis.call('HDEL', rk, 'why', 'whyk')
  end
end
