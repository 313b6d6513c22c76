-- breaker_merge: push a breaker that a replica opened locally (while the store was down) into
-- the shared state once the store is back.
-- KEYS: the target's state hash, gw:cb:{<service>}:s:<target>
-- ARGV: remaining_ms (how long the local breaker still stays open)
-- A closed target opens until now + remaining_ms; an open one keeps the later of both ends;
-- a half-open one is left alone (a probe decides, it knows more than an old local verdict).
-- Returns {0}, or {1, from, to, reason} when this call made a transition.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key, remaining = KEYS[1], tonumber(ARGV[1])
local v = redis.call('HMGET', key, 'state', 'open_until')
local state = v[1] or 'closed'
if state == 'open' then
  if (tonumber(v[2]) or 0) < now + remaining then
    redis.call('HSET', key, 'open_until', now + remaining)
  end
  return {0}
end
if state ~= 'closed' then
  return {0}
end
local reason = 'opened by a replica while the store was down'
redis.call('HSET', key, 'state', 'open', 'open_until', now + remaining, 'opened_at', now,
  'failures', 0, 'successes', 0,
  'last_from', 'closed', 'last_to', 'open', 'last_at', now, 'last_reason', reason)
redis.call('HINCRBY', key, 'transitions', 1)
return {1, 'closed', 'open', reason}
