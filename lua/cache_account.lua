-- cache_account: cluster-wide size of the cache (entries, bytes) kept as counters, so that
-- reading it is O(1). Entries leave the count when deleted or when their retention has passed.
-- KEYS[1] ZSET variant key -> expiry ms; KEYS[2] HASH variant key -> bytes; KEYS[3] HASH totals.
-- ARGV: a sequence of operations, 'add', <variant key>, <bytes>, <retention ms> or
-- 'del', <variant key>; none to just read.
-- Returns {entries, bytes}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function remove(member)
  local size = redis.call('HGET', KEYS[2], member)
  if size then
    redis.call('HDEL', KEYS[2], member)
    redis.call('HINCRBY', KEYS[3], 'bytes', -tonumber(size))
    redis.call('HINCRBY', KEYS[3], 'entries', -1)
  end
  redis.call('ZREM', KEYS[1], member)
end

local i = 1
while i <= #ARGV do
  if ARGV[i] == 'add' then
    remove(ARGV[i + 1])
    redis.call('HSET', KEYS[2], ARGV[i + 1], ARGV[i + 2])
    redis.call('HINCRBY', KEYS[3], 'bytes', tonumber(ARGV[i + 2]))
    redis.call('HINCRBY', KEYS[3], 'entries', 1)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[i + 3]), ARGV[i + 1])
    i = i + 4
  else
    remove(ARGV[i + 1])
    i = i + 2
  end
end

for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 500)) do
  remove(member)
end
local totals = redis.call('HMGET', KEYS[3], 'entries', 'bytes')
return {math.max(0, tonumber(totals[1] or '0')), math.max(0, tonumber(totals[2] or '0'))}
