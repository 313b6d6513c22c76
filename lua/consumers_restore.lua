-- consumers_restore: put a replica's copy of the run-time consumers back into a store that lost
-- them (a Redis restarted without persistence, a failover that lost the latest writes).
--
-- KEYS[1]  HASH of consumer id -> record (JSON)
-- KEYS[2]  the directory's version
-- ARGV[1]  the version of the replica's copy; nothing happens unless the store's is lower
--          (the version only ever grows, so a lower one means the store lost data; of several
--          replicas restoring at once, the one with the newest copy wins)
-- ARGV[2]  the pub/sub channel of consumer changes
-- ARGV[3..] id, record, id, record, ...
-- Returns  1 when restored, 0 when the store was not behind.

local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
