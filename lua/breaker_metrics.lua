-- breaker_metrics: what /metrics and /health show about one service's breakers (cluster-wide).
-- KEYS: for each target its state hash, rolling-window hash and probe-lease sorted set:
--       gw:cb:{<service>}:s:<t>, gw:cb:{<service>}:w:<t>, gw:cb:{<service>}:l:<t>, ...
-- ARGV: window_ms (the rolling window the recent counts cover)
-- Returns {now_ms, then per target: state, remaining_ms, consecutive_failures,
--   recent_successes, recent_failures, probes_in_flight, last_from, last_to, last_at,
--   last_reason, transitions} ('' where nothing happened yet). An open target whose time is
--   over reports 'half-open': the next request probes it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window_ms = tonumber(ARGV[1])
local width = math.max(1, math.floor(window_ms / 10))
local bucket = math.floor(now / width)
local out = {now}
for i = 1, #KEYS, 3 do
  local v = redis.call('HMGET', KEYS[i], 'state', 'open_until', 'failures', 'last_from',
    'last_to', 'last_at', 'last_reason', 'transitions')
  local state, remaining = v[1] or 'closed', 0
  if state == 'open' then
    remaining = (tonumber(v[2]) or 0) - now
    if remaining <= 0 then state, remaining = 'half-open', 0 end
  end
  local rs, rf = 0, 0
  local fields = redis.call('HGETALL', KEYS[i + 1])
  for j = 1, #fields, 2 do
    local b = tonumber(string.sub(fields[j], 3))
    if b ~= nil and b > bucket - 10 then
      if string.sub(fields[j], 1, 1) == 's' then
        rs = rs + tonumber(fields[j + 1])
      else
        rf = rf + tonumber(fields[j + 1])
      end
    end
  end
  local probes = redis.call('ZCOUNT', KEYS[i + 2], '(' .. now, '+inf')
  for _, x in ipairs({state, remaining, tonumber(v[3]) or 0, rs, rf, probes,
      v[4] or '', v[5] or '', tonumber(v[6]) or 0, v[7] or '', tonumber(v[8]) or 0}) do
    out[#out + 1] = x
  end
end
return out
