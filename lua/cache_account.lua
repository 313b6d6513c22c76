-- cache_account: the cache's cluster-wide accounting (entries, bytes, the URL of every stored
-- variant) and its byte budget. Reading the size is O(1); purging a prefix scans KEYS[4].
-- Entries leave when deleted, when their retention has passed, or when the budget is exceeded:
-- then the variants closest to the end of their retention go first (as Redis' volatile-ttl
-- would pick them) and are returned, for the caller to delete (they may live on other slots).
-- KEYS[1] ZSET variant key -> expiry ms; KEYS[2] HASH variant key -> bytes charged;
-- KEYS[3] HASH totals; KEYS[4] HASH variant key -> URL.
-- ARGV[1] byte budget (0: none); then a sequence of operations,
-- 'add', <variant key>, <bytes>, <retention ms>, <url> or 'del', <variant key>; none to read.
-- Returns {entries, bytes, evictions so far (cluster-wide), variant keys evicted now...}.
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
  redis.call('HDEL', KEYS[4], member)
end

local i = 2
while i <= #ARGV do
  if ARGV[i] == 'add' then
    remove(ARGV[i + 1])
    redis.call('HSET', KEYS[2], ARGV[i + 1], ARGV[i + 2])
    redis.call('HINCRBY', KEYS[3], 'bytes', tonumber(ARGV[i + 2]))
    redis.call('HINCRBY', KEYS[3], 'entries', 1)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[i + 3]), ARGV[i + 1])
    redis.call('HSET', KEYS[4], ARGV[i + 1], ARGV[i + 4])
    i = i + 5
  else
    remove(ARGV[i + 1])
    i = i + 2
  end
end

for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 500)) do
  remove(member)
end
if redis.call('ZCARD', KEYS[1]) == 0 then  -- nothing stored: heal any drift of the totals
  redis.call('DEL', KEYS[2], KEYS[4])
  redis.call('HDEL', KEYS[3], 'entries', 'bytes')
end

local out = {0, 0, 0}
local budget = tonumber(ARGV[1])
local bytes = tonumber(redis.call('HGET', KEYS[3], 'bytes') or '0')
while budget > 0 and bytes > budget do
  local first = redis.call('ZRANGE', KEYS[1], 0, 63)
  if #first == 0 then break end
  for _, member in ipairs(first) do
    if bytes <= budget then break end
    bytes = bytes - tonumber(redis.call('HGET', KEYS[2], member) or '0')
    remove(member)
    out[#out + 1] = member
  end
end
if #out > 3 then redis.call('HINCRBY', KEYS[3], 'evicted', #out - 3) end
local totals = redis.call('HMGET', KEYS[3], 'entries', 'bytes', 'evicted')
out[1] = math.max(0, tonumber(totals[1] or '0'))
out[2] = math.max(0, tonumber(totals[2] or '0'))
out[3] = tonumber(totals[3] or '0')
return out
