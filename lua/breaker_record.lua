-- breaker_record: count a batch of outcomes of ordinary (non-probe) requests to one target.
-- KEYS: the target's state hash and its rolling-window hash:
--       gw:cb:{<service>}:s:<target>, gw:cb:{<service>}:w:<target>
-- ARGV: successes, failures, leading_failures, longest_failure_run, trailing_failures
--       (the batch in arrival order, summarised so consecutive counting stays exact),
--       mode (0 consecutive, 1 error ratio), failure_threshold, open_ms,
--       ratio_threshold, window_ms, min_requests
-- Outcomes only count while the target is closed: in-flight requests admitted before it opened
-- must not extend or reopen it, and in half-open only probes count (breaker_probe).
-- The window is 10 buckets of window_ms/10, fields s:<bucket> and f:<bucket>.
--       , channel (where changes are published)
-- Every change of a target's state or open time sets its version `v` and is published on the
-- breaker channel as `<state key>|<code>|<remaining_ms>|<v>` (code 0 closed, 1 open, 2 half-open),
-- so every replica's board follows it (gateway/breaker/board.py).
-- Returns {0}, or {1, from, to, reason, message} when this call opened the breaker.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
--@include _breaker_changed
local state_key, window_key = KEYS[1], KEYS[2]
local successes, failures = tonumber(ARGV[1]), tonumber(ARGV[2])
local leading, longest, trailing = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local mode, threshold, open_ms = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local ratio, window_ms, min_requests = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])

local state = redis.call('HGET', state_key, 'state') or 'closed'
if state ~= 'closed' then
  return {0}
end

-- rolling window (also the "recent failures" figure in the metrics, in both modes)
local width = math.max(1, math.floor(window_ms / 10))
local bucket = math.floor(now / width)
if successes > 0 then redis.call('HINCRBY', window_key, 's:' .. bucket, successes) end
if failures > 0 then redis.call('HINCRBY', window_key, 'f:' .. bucket, failures) end
redis.call('PEXPIRE', window_key, window_ms + width)
local total_s, total_f = 0, 0
local fields = redis.call('HGETALL', window_key)
for i = 1, #fields, 2 do
  local kind, b = string.sub(fields[i], 1, 1), tonumber(string.sub(fields[i], 3))
  if b == nil or b <= bucket - 10 then
    redis.call('HDEL', window_key, fields[i])
  elseif kind == 's' then
    total_s = total_s + tonumber(fields[i + 1])
  else
    total_f = total_f + tonumber(fields[i + 1])
  end
end

local count = tonumber(redis.call('HGET', state_key, 'failures')) or 0
local run, after
if successes == 0 then
  run = count + failures
  after = run
else
  run = math.max(count + leading, longest)
  after = trailing
end

local reason = nil
if mode == 0 then
  if run >= threshold then reason = run .. ' consecutive failures' end
else
  local total = total_s + total_f
  if total >= min_requests and total_f / total >= ratio then
    reason = string.format('failure ratio %.2f over %d requests', total_f / total, total)
  end
end

if reason == nil then
  redis.call('HSET', state_key, 'failures', after)
  return {0}
end
redis.call('HSET', state_key, 'state', 'open', 'open_until', now + open_ms, 'opened_at', now,
  'failures', 0, 'successes', 0,
  'last_from', 'closed', 'last_to', 'open', 'last_at', now, 'last_reason', reason)
redis.call('HINCRBY', state_key, 'transitions', 1)
local message = changed(state_key, 1, open_ms, ARGV[12])
return {1, 'closed', 'open', reason, message}
