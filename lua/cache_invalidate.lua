-- cache_invalidate: delete every stored variant of a URL, in every scope, and note the time so
-- that a fill which looked up before now is not stored afterwards.
-- KEYS[1] root HASH of the URL; KEYS[2] invalidation time key. Variant keys: KEYS[1] .. ':' .. <vid>.
-- ARGV[1] how long to remember the invalidation, ms.
-- Returns the variant keys deleted.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deleted = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.find(all[i], '|v|', 1, true) then
    local key = KEYS[1] .. ':' .. all[i + 1]
    if redis.call('DEL', key) == 1 then deleted[#deleted + 1] = key end
  end
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], tostring(now), 'PX', ARGV[1])
return deleted
