-- Advance a cron trigger's last scheduled tick; it never moves back.
-- KEYS[1] last tick (string, ms)   ARGV[1] tick_ms
-- Returns 1 when advanced, 0 when the stored tick is already at or past ARGV[1].
local last = KEYS[1]
local tick = tonumber(ARGV[1])
local current = tonumber(redis.call("GET", last) or "-1")
if current >= tick then
  return 0
end
redis.call("SET", last, ARGV[1])
return 1
