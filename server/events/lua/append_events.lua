-- Append accepted events to the event stream in one call (one reply instead of one per event).
-- KEYS[1] event stream
-- ARGV: groups of four per event: event_id, name, event_json, idempotency_key
-- Returns the number of events appended.
local stream = KEYS[1]
local n = 0
for i = 1, #ARGV, 4 do
  redis.call('XADD', stream, '*', 'id', ARGV[i], 'name', ARGV[i + 1], 'e', ARGV[i + 2],
    'idem', ARGV[i + 3])
  n = n + 1
end
return n
