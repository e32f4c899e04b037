-- Remove consumers that hold nothing and have been idle for a while (workers that exited
-- or died and whose entries were reclaimed), so the group stays as small as the fleet.
-- Atomic: a consumer that leased entries since it was read is not removed (DELCONSUMER
-- would drop its pending entries with it).
-- KEYS[1]  the item stream
-- ARGV[1]  the consumer group
-- ARGV[2]  idle time in milliseconds after which an empty consumer goes
-- Returns the names removed.
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then
  return {}
end
local removed = {}
local limit = tonumber(ARGV[2])
for _, c in ipairs(consumers) do
  local name, pending, idle = nil, nil, nil
  for j = 1, #c, 2 do
    if c[j] == 'name' then name = c[j + 1]
    elseif c[j] == 'pending' then pending = c[j + 1]
    elseif c[j] == 'idle' then idle = c[j + 1] end
  end
  if name ~= nil and pending == 0 and idle ~= nil and idle > limit then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    removed[#removed + 1] = name
  end
end
return removed
