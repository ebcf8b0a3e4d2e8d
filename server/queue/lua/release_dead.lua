-- Hand back at once the leases of dead processes (their heartbeat is gone, server/liveness.py),
-- as release.lua does: a redelivery, due after the backoff the caller passes, past the cap the
-- run fails (see _redeliver.lua, loaded before this script). The executor passes a backoff of 0
-- (server/executor/executor.py `_release_dead`): the jobs are due at once, still counted against
-- the cap. Leases of other holders keep their expiry. The dead holders leave the shard's holders
-- set.
-- KEYS[1] leased zset  KEYS[2] history stream  KEYS[3] holders set
-- ARGV[1..6] as in _redeliver.lua  ARGV[7..] the dead holders
-- Returns the number of jobs handed back.
local holders = KEYS[3]
local dead = {}
for i = 7, #ARGV do
  dead[ARGV[i]] = true
end
local count = 0
for _, id in ipairs(redis.call('ZRANGE', leased, 0, -1)) do
  local jk = tag .. ':job:' .. id
  local job = redis.call('HMGET', jk, 'holder', 'lease')
  if job[1] and dead[job[1]] then
    hand_back(id, jk, job[2] or '', 'the server holding the lease stopped (no heartbeat)')
    count = count + 1
  end
end
for i = 7, #ARGV do
  redis.call('SREM', holders, ARGV[i])
end
return count
