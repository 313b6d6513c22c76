-- replica_heartbeat: announce one gateway replica and count the live ones.
--
-- KEYS[1]  ZSET of replica ids scored by last heartbeat (ms), e.g. gw:{replicas}
-- KEYS[2]  this replica's description (a string, JSON), e.g. gw:{replicas}:<id>
-- ARGV[1]  ttl in milliseconds: a replica silent for longer is no longer live
-- ARGV[2]  this replica's id (the ZSET member)
-- ARGV[3]  this replica's description (JSON text)
-- Returns  the number of live replicas, this one included.
-- Clock: redis.call('TIME'), so replicas with skewed clocks agree on who is live.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])

redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 10)
redis.call('SET', KEYS[2], ARGV[3], 'PX', ttl)
return redis.call('ZCARD', KEYS[1])
