-- Wait entries (server/state/waits.py), shared by the scripts that make, end or drop waits.
-- An entry is a field of a `waits:<event>` hash, a member of one index or scan set, and a
-- field of its run's `waitrefs` hash ("[waits key, set key]"), so the run's end finds it.
local function add_wait(refs, waits_key, field, set_key, paths_key, path, entry)
  redis.call('HSET', waits_key, field, entry)
  redis.call('SADD', set_key, field)
  if path ~= '' then
    redis.call('SADD', paths_key, path)
  end
  redis.call('HSET', refs, field, cjson.encode({waits_key, set_key}))
end

local function remove_wait(refs, waits_key, field, set_key)
  redis.call('HDEL', waits_key, field)
  redis.call('SREM', set_key, field)
  redis.call('HDEL', refs, field)
end

-- Removes every wait a run still has (its end).
local function drop_waits(refs)
  local all = redis.call('HGETALL', refs)
  for i = 1, #all, 2 do
    local where = cjson.decode(all[i + 1])
    redis.call('HDEL', where[1], all[i])
    redis.call('SREM', where[2], all[i])
  end
  redis.call('DEL', refs)
end

-- A planned step's job ended, its step memoised (the prelude's advance, resume_wait.lua):
-- its hash and its place in the run's `planned` set go (the caller takes it out of the
-- ready or leased set). In a race group (`race` in the job's hash) the first step to end
-- settles the group: the group's other parked sleeps, waits and invokes end too, with the
-- timeout answers already memoised, and their wait entries go (planned step.run jobs keep
-- running). Returns whether the main job must run now: the race has its first, or no planned
-- step is left, and the main job is parked (neither ready nor leased, as steps_planned.lua
-- left it).
local function end_planned(job_key, step_id, planned, steps, refs, ready, leased, job_prefix,
                           run_id)
  local race = redis.call('HGET', job_key, 'race') == '1'
  redis.call('DEL', job_key)
  redis.call('SREM', planned, step_id)
  if race then
    for _, other in ipairs(redis.call('SMEMBERS', planned)) do
      local id = run_id .. ':' .. other
      if redis.call('HEXISTS', steps, other) == 1
          and redis.call('HGET', job_prefix .. id, 'race') == '1'
          and (redis.call('HGET', job_prefix .. id, 'lease') or '') == '' then
        redis.call('ZREM', ready, id)
        redis.call('DEL', job_prefix .. id)
        redis.call('SREM', planned, other)
        local field = run_id .. '/' .. other
        local where = redis.call('HGET', refs, field)
        if where then
          where = cjson.decode(where)
          remove_wait(refs, where[1], field, where[2])
        end
      end
    end
  elseif redis.call('SCARD', planned) > 0 then
    return false
  end
  return not redis.call('ZSCORE', ready, run_id) and not redis.call('ZSCORE', leased, run_id)
end
