-- stats_read: the snapshots of the live replicas.
--
-- KEYS[1]  HASH replica id -> snapshot (JSON text), e.g. gw:{stats}:snapshots
-- KEYS[2]  ZSET of replica ids scored by last publish (ms), e.g. gw:{stats}:seen
-- ARGV[1]  ttl in milliseconds: replicas silent for longer are left out
-- Returns  a flat array: id, age in ms, snapshot, id, age, snapshot, ...
-- Clock: redis.call('TIME').

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])

local live = redis.call('ZRANGEBYSCORE', KEYS[2], now - ttl, '+inf', 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  local snapshot = redis.call('HGET', KEYS[1], live[i])
  if snapshot then
    out[#out + 1] = live[i]
    out[#out + 1] = now - tonumber(live[i + 1])
    out[#out + 1] = snapshot
  end
end
return out
