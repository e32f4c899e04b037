-- Acknowledge entries whose results are committed, and delete them from the stream so that
-- acknowledged work does not accumulate (this is the stream's trimming).
-- KEYS[1]  the item stream
-- ARGV[1]  the consumer group
-- ARGV[2..] entry ids
-- Returns the number of entries that were pending and are now acknowledged.
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
return acked
