-- Create runs with their first jobs, skipping runs that already exist (idempotent: the runner
-- may see an event twice after a crash, and run ids are derived from event and function),
-- and apply the run-creation flow controls. Many runs in one call, all in this shard.
-- Loaded after server/state/lua/_waits.lua and _flow.lua.
-- KEYS[1] history stream of the shard
-- ARGV[1] shard key tag  ARGV[2] now_ms  ARGV[3] finished-run ttl s
-- ARGV[4..] groups of thirteen per run: run_id, function_id, app_id, event_json, event_id,
-- max_attempts, available_at_ms (its job's score: 0, or -priority ms), job_id, start_by (ms,
-- 0: no start timeout), finish_ms (the finish timeout, 0: none; lease.lua turns it into
-- `finish_by` when the run starts), waits (its cancel-on entries: a JSON array of [waits key,
-- field, set key, paths key, path, entry], or ''), create (the creation controls as JSON, or
-- ''), flow (stored as the run's `flow` for lease.lua, or '').
-- create: {"i": [idempotency key, ttl ms], "r": [rate key, limit, period ms, why],
-- "s": [singleton key, "skip"|"cancel"], "d": [debounce key, period ms, timeout ms, waiting],
-- "b": [batch key ('' = a batch of one), max size, timeout ms, waiting, max bytes of the
-- batch's `events`]}: checked in that
-- order. A skipped run is recorded as ended with status skipped (FlowControlSkipped); a
-- debounced or batched event whose key has a queued run goes to that run instead.
-- Returns {codes, cancels}: per run 1 created, 0 existed, 2 skipped, 3 given to another run;
-- cancels: run ids a singleton `cancel` ended the turn of (the caller cancels them).
local history = KEYS[1]
local tag, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local codes, cancels = {}, {}

local function skip(run, run_id, fn, app, event, event_id, why)
  local err = cjson.encode({name = 'FlowControlSkipped', message = why, stack = ''})
  redis.call('HSET', run, 'fn', fn, 'app', app, 'event', event, 'status', 'skipped',
    'created', now, 'ended', now, 'error', err)
  redis.call('EXPIRE', run, ttl)
  redis.call('XADD', history, '*', 'k', 'run', 'run', run_id, 'fn', fn, 'app', app,
    'event', event_id, 'ts', now)
  redis.call('XADD', history, '*', 'k', 'end', 'run', run_id, 'status', 'skipped',
    'output', '', 'error', err, 'ts', now, 'fn', fn, 'app', app)
  return 2
end

-- The queued run `target_id` whose job still waits in `ready` (not leased, not parked for a
-- concurrency slot), or nil.
local function waiting_run(target_id, ready)
  if not target_id then return nil end
  local run = tag .. ':run:' .. target_id
  if redis.call('HGET', run, 'status') ~= 'queued' then return nil end
  if not redis.call('ZSCORE', ready, target_id)
      or redis.call('HEXISTS', tag .. ':job:' .. target_id, 'parked') == 1 then
    return nil
  end
  return run
end

local function active(run_id)
  local status = redis.call('HGET', tag .. ':run:' .. run_id, 'status')
  return status == 'queued' or status == 'running'
end

for i = 4, #ARGV, 13 do
  local run_id, fn, app, event, event_id = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    ARGV[i + 4]
  local job_id, create, flow = ARGV[i + 7], ARGV[i + 11], ARGV[i + 12]
  local run = tag .. ':run:' .. run_id
  local ready = tag .. ':ready:' .. fn
  local code, at, fields = 1, tonumber(ARGV[i + 6]), {}
  local spec = create ~= '' and cjson.decode(create) or nil
  if redis.call('EXISTS', run) == 1 then
    code = 0
  elseif spec then
    if spec.i and not redis.call('SET', spec.i[1], run_id, 'NX', 'PX', spec.i[2]) then
      code = skip(run, run_id, fn, app, event, event_id, 'idempotency: run ' ..
        redis.call('GET', spec.i[1]) .. ' already ran for this key within 24 h')
    elseif spec.r and gcra(spec.r[1], now, spec.r[2], spec.r[3], spec.r[2], false) > 0 then
      code = skip(run, run_id, fn, app, event, event_id, spec.r[4])
    elseif spec.s then
      local before = redis.call('GET', spec.s[1])
      if before and before ~= run_id and active(before) then
        if spec.s[2] == 'skip' then
          code = skip(run, run_id, fn, app, event, event_id, 'singleton: run ' .. before ..
            ' of this key is active')
        else
          cancels[#cancels + 1] = before
        end
      end
    end
    if code == 1 and spec.d then
      local d = spec.d
      local target_id = redis.call('GET', d[1])
      local target = waiting_run(target_id, ready)
      local last = target and redis.call('HGET', target, 'debounce_last')
      if last and event_id <= last then
        -- An event read again after a crash, or older than the one the run has (event ids
        -- are ULIDs, ordered by time): the run keeps the latest.
        code = 3
      elseif target then
        -- The last event wins: the queued run takes it and waits a quiet period again.
        redis.call('HSET', target, 'debounce_last', event_id)
        local first = tonumber(redis.call('HGET', target, 'debounce_first')) or now
        local due = now + d[2]
        if d[3] > 0 then due = math.min(due, first + d[3]) end
        redis.call('HSET', target, 'event', event)
        redis.call('ZADD', ready, due, target_id)
        -- History links the run to the event it runs with (its creation time unchanged).
        redis.call('XADD', history, '*', 'k', 'run', 'run', target_id, 'fn', fn, 'app', app,
          'event', event_id, 'ts', redis.call('HGET', target, 'created'))
        code = 3
      else
        at = now + d[2]
        if d[3] > 0 then at = math.min(at, now + d[3]) end
        redis.call('SET', d[1], run_id, 'PX', math.max(d[2], d[3]) + 60000)
        fields = {'debounce_first', now, 'debounce_last', event_id}
      end
    elseif code == 1 and spec.b then
      local b = spec.b
      local target_id = b[1] ~= '' and redis.call('GET', b[1]) or nil
      local target = waiting_run(target_id, ready)
      local seen = target and redis.call('HGET', target, 'batch_ids') or ''
      local events = target and redis.call('HGET', target, 'events') or ''
      if target and not string.find(seen, event_id, 1, true)
          and #events + #event + 1 > b[5] then
        -- Full by bytes: the batch is due now and this event opens the key's next batch.
        redis.call('ZADD', ready, now, target_id)
        redis.call('DEL', b[1])
        target = nil
      end
      if target and string.find(seen, event_id, 1, true) then
        code = 3  -- this event was added already (the runner read it again after a crash)
      elseif target and (tonumber(redis.call('HGET', target, 'batch_n')) or b[2]) < b[2] then
        redis.call('HSET', target, 'batch_ids', seen .. ' ' .. event_id)
        local n = redis.call('HINCRBY', target, 'batch_n', 1)
        redis.call('HSET', target, 'events', string.sub(events, 1, -2) .. ',' .. event .. ']')
        if n >= b[2] then
          -- Full: due now, and the key's next event opens a new batch.
          redis.call('ZADD', ready, now, target_id)
          redis.call('DEL', b[1])
        end
        set_why(target, target_id, 'batching (' .. n .. ' of ' .. b[2] .. ')', b[4])
        code = 3
      else
        if b[2] > 1 and b[1] ~= '' then
          at = now + b[3]
          redis.call('SET', b[1], run_id, 'PX', b[3] + 60000)
        else
          at = now
        end
        fields = {'events', '[' .. event .. ']', 'batch_n', 1, 'batch_ids', event_id}
      end
    end
  end
  if code == 1 then
    redis.call('HSET', run, 'fn', fn, 'app', app, 'event', event, 'status', 'queued',
      'created', now, 'max', ARGV[i + 5], 'start_by', ARGV[i + 8], 'finish_ms', ARGV[i + 9])
    if flow ~= '' then
      redis.call('HSET', run, 'flow', flow)
    end
    if #fields > 0 then
      redis.call('HSET', run, unpack(fields))
    end
    redis.call('HSET', tag .. ':job:' .. job_id, 'run', run_id, 'fn', fn, 'attempt', 0,
      'lease', '')
    redis.call('ZADD', ready, at, job_id)
    if ARGV[i + 10] ~= '' then
      for _, w in ipairs(cjson.decode(ARGV[i + 10])) do
        add_wait(run .. ':waitrefs', w[1], w[2], w[3], w[4], w[5], w[6])
      end
    end
    redis.call('XADD', history, '*', 'k', 'run', 'run', run_id, 'fn', fn, 'app', app,
      'event', event_id, 'ts', now)
    if spec and spec.s then
      -- Kept 30 days: a run still active after that is no longer seen by its key.
      redis.call('SET', spec.s[1], run_id, 'PX', 2592000000)
    end
    if spec and spec.d then
      set_why(run, run_id, 'debouncing', spec.d[4])
    elseif spec and spec.b and at > now then
      set_why(run, run_id, 'batching (1 of ' .. spec.b[2] .. ')', spec.b[4])
    end
  end
  codes[#codes + 1] = code
end
return {codes, cancels}
