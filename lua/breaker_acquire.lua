-- breaker_acquire: admit one request to a service none of whose targets looked closed (rare path).
-- KEYS: for each candidate target its state hash, then its probe-lease sorted set:
--       gw:cb:{<service>}:s:<target>, gw:cb:{<service>}:l:<target>, ... (one hash tag)
-- ARGV: half_open_max_calls, half_open_timeout_ms, channel (where changes are published)
-- Every change of a target's state or open time sets its version `v` and is published on the
-- breaker channel as `<state key>|<code>|<remaining_ms>|<v>` (code 0 closed, 1 open, 2 half-open),
-- so every replica's board follows it (gateway/breaker/board.py).
-- A target whose open time is over moves to half-open here. A probe lease is a member of the
-- lease set scored with its expiry, so a lease whose replica crashed frees up by itself; at most
-- half_open_max_calls unexpired leases exist per target, cluster-wide.
-- Returns {kind, index, lease_id, retry_ms, [index, from, to, reason, message]...}:
--   kind 0: target `index` (1-based) is closed after all, send as usual
--   kind 1: probe lease `lease_id` granted on target `index`
--   kind 2: rejected, every target is open; retry_ms until the first one may be probed
--   kind 3: rejected, probes are in flight (half-open); retry_ms is a suggestion
-- The trailing entries are the transitions this call made (so only this caller logs them).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
--@include _breaker_changed
local max_calls = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
local transitions = {}
local retry = nil
local half_open_seen = false

local function result(kind, index, lease, retry_ms)
  local out = {kind, index, lease, retry_ms}
  for _, v in ipairs(transitions) do out[#out + 1] = v end
  return out
end

for i = 1, #KEYS, 2 do
  local state_key, lease_key = KEYS[i], KEYS[i + 1]
  local index = (i + 1) / 2
  local v = redis.call('HMGET', state_key, 'state', 'open_until')
  local state = v[1] or 'closed'
  if state == 'closed' then
    return result(0, index, 0, 0)
  end
  if state == 'open' then
    local due = tonumber(v[2]) or 0
    if now < due then
      if retry == nil or due - now < retry then retry = due - now end
    else
      redis.call('HSET', state_key, 'state', 'half-open', 'successes', 0,
        'last_from', 'open', 'last_to', 'half-open', 'last_at', now,
        'last_reason', 'open time elapsed')
      redis.call('HINCRBY', state_key, 'transitions', 1)
      redis.call('DEL', lease_key)
      local message = changed(state_key, 2, 0, ARGV[3])
      for _, x in ipairs({index, 'open', 'half-open', 'open time elapsed', message}) do
        transitions[#transitions + 1] = x
      end
      state = 'half-open'
    end
  end
  if state == 'half-open' then
    half_open_seen = true
    redis.call('ZREMRANGEBYSCORE', lease_key, '-inf', now)
    if redis.call('ZCARD', lease_key) < max_calls then
      local lease = redis.call('HINCRBY', state_key, 'lease_seq', 1)
      redis.call('ZADD', lease_key, now + lease_ms, lease)
      redis.call('PEXPIRE', lease_key, lease_ms)
      return result(1, index, lease, 0)
    end
  end
end
if half_open_seen then
  return result(3, 0, 0, 1000)
end
return result(2, 0, 0, retry or 1000)
