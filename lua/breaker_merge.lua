-- breaker_merge: push a breaker that a replica opened locally (while the store was down) into
-- the shared state once the store is back.
-- KEYS: the target's state hash, gw:cb:{<service>}:s:<target>
-- ARGV: remaining_ms (how long the local breaker still stays open), channel
-- Every change of a target's state or open time sets its version `v` and is published on the
-- breaker channel as `<state key>|<code>|<remaining_ms>|<v>` (code 0 closed, 1 open, 2 half-open),
-- so every replica's board follows it (gateway/breaker/board.py).
-- A closed target opens until now + remaining_ms; an open one keeps the later of both ends;
-- a half-open one is left alone (a probe decides, it knows more than an old local verdict).
-- Returns {0} (nothing changed), {2, message} (the open time was extended), or
-- {1, from, to, reason, message} when this call made a transition.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
--@include _breaker_changed
local key, remaining = KEYS[1], tonumber(ARGV[1])
local v = redis.call('HMGET', key, 'state', 'open_until')
local state = v[1] or 'closed'
if state == 'open' then
  if (tonumber(v[2]) or 0) < now + remaining then
    redis.call('HSET', key, 'open_until', now + remaining)
    return {2, changed(key, 1, remaining, ARGV[2])}
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
return {1, 'closed', 'open', reason, changed(key, 1, remaining, ARGV[2])}
