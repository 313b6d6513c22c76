-- stats_publish: store one replica's statistics snapshot and forget replicas that went silent.
--
-- KEYS[1]  HASH replica id -> snapshot (JSON text), e.g. gw:{stats}:snapshots
-- KEYS[2]  ZSET of replica ids scored by last publish (ms), e.g. gw:{stats}:seen
-- ARGV[1]  ttl in milliseconds: a replica silent for longer drops out of the cluster view
-- ARGV[2]  this replica's id
-- ARGV[3]  this replica's snapshot (JSON text)
-- Returns  the number of live replicas, this one included.
-- Clock: redis.call('TIME'), so replicas with skewed clocks agree on who is live.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])

local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
for _, id in ipairs(gone) do
  redis.call('HDEL', KEYS[1], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
redis.call('ZADD', KEYS[2], now, ARGV[2])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
-- Both keys vanish on their own once every replica is gone.
redis.call('PEXPIRE', KEYS[1], ttl * 10)
redis.call('PEXPIRE', KEYS[2], ttl * 10)
return redis.call('ZCARD', KEYS[2])
