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
