-- Append accepted events to the event stream in one call (one reply instead of one per event),
-- recording each id in the accepted ledger. An id the ledger already holds is not appended
-- again: a re-sent event (same id) or one the reconciler re-appends reaches the runners once.
-- KEYS[1] event stream  KEYS[2] accepted ledger (zset: event id -> append time, ms)
-- ARGV[1] now_ms, then groups of four per event: event_id, name, event_json, idempotency_key
-- Returns the number of events appended.
local stream, ledger = KEYS[1], KEYS[2]
local now = ARGV[1]
local n = 0
for i = 2, #ARGV, 4 do
  if redis.call('ZADD', ledger, 'NX', now, ARGV[i]) == 1 then
    redis.call('XADD', stream, '*', 'id', ARGV[i], 'name', ARGV[i + 1], 'e', ARGV[i + 2],
      'idem', ARGV[i + 3])
    n = n + 1
  end
end
return n
