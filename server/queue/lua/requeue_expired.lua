-- Hand back jobs whose lease expired (their worker or server died without closing the
-- stream), as release.lua does: due again after the redelivery backoff, and past the cap the
-- run fails (see _redeliver.lua, loaded before this script).
-- KEYS[1] leased zset  KEYS[2] history stream
-- ARGV[1..6] as in _redeliver.lua  ARGV[7] max jobs to requeue
-- Returns the number of expired leases handled.
local ids = redis.call('ZRANGEBYSCORE', leased, '-inf', now, 'LIMIT', 0, tonumber(ARGV[7]))
for _, id in ipairs(ids) do
  local jk = tag .. ':job:' .. id
  hand_back(id, jk, redis.call('HGET', jk, 'lease') or '',
    'the lease expired without an answer or heartbeat from the worker')
end
return #ids
