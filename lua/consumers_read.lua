-- consumers_read: every run-time consumer and the version they are at, read together.
--
-- KEYS[1]  HASH of consumer id -> record (JSON)
-- KEYS[2]  the directory's version
-- Returns  {version, id1, record1, id2, record2, ...}

local out = {tonumber(redis.call('GET', KEYS[2]) or '0')}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all do
  out[#out + 1] = all[i]
end
return out
