-- Hand leased jobs back to their ready sets at once (their worker's stream closed). This is a
-- redelivery, not a retry: the attempt count is unchanged and a redelivery counter grows.
-- KEYS[1] leased zset
-- ARGV[1] now_ms  ARGV[2] shard key tag  ARGV[3..] job_id, lease_id pairs
-- Returns the number of jobs released.
local leased = KEYS[1]
local tag = ARGV[2]
local count = 0
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local jk = tag .. ':job:' .. id
  local job = redis.call('HMGET', jk, 'lease', 'fn')
  if job[1] == ARGV[i + 1] and job[1] ~= '' then
    redis.call('ZREM', leased, id)
    redis.call('HSET', jk, 'lease', '')
    redis.call('HINCRBY', jk, 'redeliveries', 1)
    redis.call('ZADD', tag .. ':ready:' .. job[2], ARGV[1], id)
    count = count + 1
  end
end
return count
