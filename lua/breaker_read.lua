-- breaker_read: the breaker state of every target of one service, read-only, for the hot path.
-- KEYS: the state hash of each target, gw:cb:{<service>}:s:<target>, all under one hash tag.
-- ARGV: none.
-- Returns {now_ms, code_1, remaining_ms_1, failures_1, version_1, code_2, ...} per KEYS entry:
--   code 0 closed; 1 open (remaining_ms until it may be probed); 2 half-open, or open and due
--   for a probe (the caller then runs breaker_acquire). failures: the consecutive failure count;
--   version: bumped by every change of the state or the open time (the board's order).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now}
for _, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'state', 'open_until', 'failures', 'v')
  local code, remaining = 0, 0
  if v[1] == 'open' then
    local due = tonumber(v[2]) or 0
    if now < due then
      code, remaining = 1, due - now
    else
      code = 2
    end
  elseif v[1] == 'half-open' then
    code = 2
  end
  out[#out + 1] = code
  out[#out + 1] = remaining
  out[#out + 1] = tonumber(v[3]) or 0
  out[#out + 1] = tonumber(v[4]) or 0
end
return out
