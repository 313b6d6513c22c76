-- consumers_change: write (or delete) one run-time consumer, if nobody changed any since it was read.
--
-- KEYS[1]  HASH of consumer id -> record (JSON), e.g. gw:consumers:{gw}:records
-- KEYS[2]  the directory's version (an integer, bumped by every change), e.g. gw:consumers:{gw}:ver
-- ARGV[1]  the version the change was computed on (optimistic concurrency: a mismatch changes nothing)
-- ARGV[2]  the consumer id
-- ARGV[3]  the new record (JSON), or '' to delete it
-- ARGV[4]  the pub/sub channel every replica listens on (the new version is published there)
-- Returns  {1, new version} when written, {0, current version} when the version moved on.

local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[2])
else
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
end
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[4], tostring(version))
return {1, version}
