-- cache_release: give up a fill without storing, and wake the waiters of every replica.
-- KEYS[1] the fill lock (the URL's shared one, or the request's scope's); KEYS[2] root HASH of
-- the URL.
-- ARGV[1] lock token; ARGV[2] outcome: 'pass' (uncacheable: remember it so that the requests of
-- this scope go straight upstream without waiting), 'error' or 'retry'; ARGV[3] the request's
-- scope (its pass marker; never another consumer's); ARGV[4] pass marker lifetime ms;
-- ARGV[5] pub/sub channel; ARGV[6] wake-up message (to the waiters of KEYS[1]).
-- Returns 1 if the lock was ours, else 0.
local mine = 0
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  mine = 1
end
if ARGV[2] == 'pass' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local ttl = tonumber(ARGV[4])
  redis.call('HSET', KEYS[2], ARGV[3] .. '|pass', tostring(now + ttl))
  if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return mine
