-- Move an entry to the dead-letter stream with its reason, acknowledge it and delete it.
-- Called after the item is marked dead in Postgres. Idempotent: an entry no longer pending
-- is not written to the dead letters twice.
-- KEYS[1]  the item stream
-- KEYS[2]  the dead-letter stream
-- ARGV[1]  the consumer group
-- ARGV[2]  entry id
-- ARGV[3]  job id
-- ARGV[4]  item id
-- ARGV[5]  reason
-- ARGV[6]  deliveries so far
-- Returns 1 if the entry was dead-lettered now, 0 if it already had been.
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  -- The entry's payload goes with it, so a requeue puts back exactly what died (an
  -- extension's first sample included).
  local payload = ''
  local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
  if #e == 1 then
    local f = e[1][2]
    for j = 1, #f, 2 do
      if f[j] == 'item' then payload = f[j + 1] end
    end
  end
  redis.call('XADD', KEYS[2], '*', 'entry', ARGV[2], 'job', ARGV[3], 'item', ARGV[4], 'reason', ARGV[5], 'deliveries', ARGV[6], 'payload', payload)
end
redis.call('XDEL', KEYS[1], ARGV[2])
return acked
