-- Which entries a consumer holds now, and whether each carries the job's item a report
-- names: a result is stored only for such an entry, so a stale worker (whose entry another
-- took over) or anyone else cannot overwrite a verdict.
-- KEYS[1]  the item stream
-- ARGV[1]  the consumer group
-- ARGV[2]  the consumer
-- ARGV[3..] triples: entry id, job id, item id
-- Returns one integer per triple: 1 held and matching, 0 not held (or gone), -1 held but
-- carrying another job's item.
local out = {}
for i = 3, #ARGV, 3 do
  local id, job, item = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local ok = 0
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if #p == 1 then
    ok = -1
    local e = redis.call('XRANGE', KEYS[1], id, id)
    if #e == 1 then
      local f = e[1][2]
      local fjob, fid, payload = nil, nil, nil
      for j = 1, #f, 2 do
        if f[j] == 'job' then fjob = f[j + 1]
        elseif f[j] == 'id' then fid = f[j + 1]
        elseif f[j] == 'item' then payload = f[j + 1] end
      end
      -- Entries written before the job and id fields existed: read them from the payload.
      if (fjob == nil or fid == nil) and payload ~= nil then
        local decoded, q = pcall(cjson.decode, payload)
        if decoded and type(q) == 'table' and type(q.item) == 'table' then
          fjob, fid = q.job_id, q.item.id
        end
      end
      if fjob == job and fid == item then ok = 1 end
    end
  end
  out[#out + 1] = ok
end
return out
