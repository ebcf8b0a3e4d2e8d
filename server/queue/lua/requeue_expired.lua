-- Hand jobs whose lease expired (their worker or server died without closing the stream)
-- back to their ready sets. A redelivery, not a retry.
-- KEYS[1] leased zset
-- ARGV[1] now_ms  ARGV[2] shard key tag  ARGV[3] max jobs to requeue
-- Returns the number of jobs requeued.
local leased = KEYS[1]
local now = ARGV[1]
local tag = ARGV[2]
local ids = redis.call('ZRANGEBYSCORE', leased, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local jk = tag .. ':job:' .. id
  redis.call('ZREM', leased, id)
  local fn = redis.call('HGET', jk, 'fn')
  if fn then
    redis.call('HSET', jk, 'lease', '')
    redis.call('HINCRBY', jk, 'redeliveries', 1)
    redis.call('ZADD', tag .. ':ready:' .. fn, now, id)
  end
end
return #ids
