-- Extend the leases of jobs whose lease is still the given one.
-- KEYS[1] leased zset
-- ARGV[1] new expiry ms  ARGV[2] shard key tag  ARGV[3..] job_id, lease_id pairs
-- Returns the number of leases extended.
local leased = KEYS[1]
local tag = ARGV[2]
local count = 0
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('HGET', tag .. ':job:' .. id, 'lease') == ARGV[i + 1] then
    redis.call('ZADD', leased, 'XX', ARGV[1], id)
    count = count + 1
  end
end
return count
