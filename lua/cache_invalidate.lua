-- cache_invalidate: delete every stored variant of a URL, in every scope, and note the time (in
-- microseconds) so that a fill which looked up before now is not stored afterwards.
-- KEYS[1] root HASH of the URL; KEYS[2] invalidation time key. Variant keys: KEYS[1] .. ':' .. <vid>.
-- ARGV[1] how long to remember the invalidation, ms.
-- Returns the variant keys deleted.
local t = redis.call('TIME')
local deleted = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.find(all[i], '|v|', 1, true) then
    local key = KEYS[1] .. ':' .. all[i + 1]
    if redis.call('DEL', key) == 1 then deleted[#deleted + 1] = key end
  end
end
redis.call('DEL', KEYS[1])
-- Digits joined as text: tostring() of a 16-digit number would print it in exponent form.
redis.call('SET', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])), 'PX', ARGV[1])
return deleted
