-- Hand leased jobs back without an answer (their worker's stream closed, the driver could not
-- call the app). A redelivery, not a retry: the attempt count is unchanged, the job is due
-- again after the redelivery backoff, and past the cap its run fails (see _redeliver.lua,
-- loaded before this script).
-- KEYS[1] leased zset  KEYS[2] history stream
-- ARGV[1..6] as in _redeliver.lua  ARGV[7] why the jobs are handed back
-- ARGV[8..] job_id, lease_id pairs
-- Returns the number of jobs handed back (queued again or over the cap).
local reason = ARGV[7]
local count = 0
for i = 8, #ARGV, 2 do
  local id = ARGV[i]
  local jk = tag .. ':job:' .. id
  local lease = redis.call('HGET', jk, 'lease')
  if lease and lease ~= '' and lease == ARGV[i + 1] then
    if hand_back(id, jk, lease, reason) > 0 then
      count = count + 1
    end
  end
end
return count
