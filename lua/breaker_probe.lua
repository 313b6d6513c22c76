-- breaker_probe: settle a half-open probe right away (not batched).
-- KEYS: the target's state hash, probe-lease sorted set and rolling-window hash:
--       gw:cb:{<service>}:s:<target>, gw:cb:{<service>}:l:<target>, gw:cb:{<service>}:w:<target>
-- ARGV: lease_id, outcome (0 release without a verdict, 1 success, 2 failure),
--       success_threshold, open_ms, channel (where changes are published)
-- Every change of a target's state or open time sets its version `v` and is published on the
-- breaker channel as `<state key>|<code>|<remaining_ms>|<v>` (code 0 closed, 1 open, 2 half-open),
-- so every replica's board follows it (gateway/breaker/board.py).
-- success_threshold successes close the breaker (fresh counts), one failure reopens it for
-- open_ms. A probe whose lease already expired still counts while the target is half-open: its
-- answer is as good as anyone's.
-- Returns {0}, or {1, from, to, reason, message} when this call made a transition.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
--@include _breaker_changed
local state_key, lease_key, window_key = KEYS[1], KEYS[2], KEYS[3]
local lease, outcome = ARGV[1], tonumber(ARGV[2])
local success_threshold, open_ms = tonumber(ARGV[3]), tonumber(ARGV[4])

redis.call('ZREM', lease_key, lease)
local state = redis.call('HGET', state_key, 'state') or 'closed'
if state ~= 'half-open' or outcome == 0 then
  return {0}
end

local reason, to
if outcome == 1 then
  local successes = redis.call('HINCRBY', state_key, 'successes', 1)
  if successes < success_threshold then
    return {0}
  end
  to, reason = 'closed', 'probes succeeded: ' .. successes
  redis.call('HSET', state_key, 'state', 'closed', 'failures', 0, 'successes', 0)
  redis.call('DEL', window_key)
else
  to, reason = 'open', 'probe failed'
  redis.call('HSET', state_key, 'state', 'open', 'open_until', now + open_ms, 'opened_at', now,
    'successes', 0)
end
redis.call('DEL', lease_key)
redis.call('HSET', state_key, 'last_from', 'half-open', 'last_to', to, 'last_at', now,
  'last_reason', reason)
redis.call('HINCRBY', state_key, 'transitions', 1)
local code, remaining = 0, 0
if to == 'open' then code, remaining = 1, open_ms end
local message = changed(state_key, code, remaining, ARGV[5])
return {1, 'half-open', to, reason, message}
