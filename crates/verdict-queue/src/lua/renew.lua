-- Set the idle time of the entries this consumer still holds, and only those: an entry
-- another worker has taken over stays theirs (a plain XCLAIM would take it back).
-- Renewing a lease is idle 0; releasing one is an idle past the lease timeout, so the next
-- reclaim takes it at once. Neither counts a delivery (JUSTID).
-- KEYS[1]  the item stream
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer
-- ARGV[3]  the idle time to set, in milliseconds
-- ARGV[4..] entry ids
-- Returns the ids the consumer still held.
local held = {}
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #p == 1 then
    held[#held + 1] = ARGV[i]
  end
end
if #held > 0 then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(held), 'IDLE', ARGV[3], 'JUSTID')
end
return held
