-- ratelimit: evaluate every window that applies to one request, atomically, all or nothing.
--
-- KEYS[i]  one key per window, all sharing the consumer's {hash tag}:
--          a ZSET for sliding_log, a HASH {s = window index, c = current, p = previous}
--          for sliding_window.
-- ARGV     three numbers per window i (same order as KEYS):
--          ARGV[3i-2] algorithm: 1 = sliding_log (exact), 2 = sliding_window (weighted counter)
--          ARGV[3i-1] limit (requests per window, >= 1)
--          ARGV[3i]   window length in milliseconds (>= 1)
-- Returns  {admitted, w1_allowed, w1_remaining, w1_reset_ms, w2_allowed, ...}
--          admitted is 1 when every window allowed the request and each one consumed one unit,
--          0 when at least one refused and nothing was consumed.
--          remaining: units left after this request (0 when refused);
--          reset_ms: when refused, milliseconds until this window would admit one more
--          (the Retry-After); when allowed, milliseconds until the oldest counted unit leaves
--          the window (sliding_log) or the current fixed bucket ends (sliding_window).
-- Clock: redis.call('TIME') only, so every replica sees the same time.

local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])  -- < 2^53: exact in a Lua double
local now = now_us / 1000  -- ms, fractional

local n = #KEYS
local results = {}
local admitted = 1
local plans = {}

for i = 1, n do
  local key = KEYS[i]
  local algo = tonumber(ARGV[3 * i - 2])
  local limit = tonumber(ARGV[3 * i - 1])
  local window = tonumber(ARGV[3 * i])
  local allowed, remaining, reset

  if algo == 1 then
    -- Exact log: one ZSET entry per admitted request inside the window, scored in
    -- microseconds (milliseconds would let a burst inside one ms in up to 1 ms early).
    local window_us = window * 1000
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_us - window_us)
    local count = redis.call('ZCARD', key)
    if count < limit then
      allowed, remaining = 1, limit - count - 1
      local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if oldest[2] then reset = (tonumber(oldest[2]) + window_us - now_us) / 1000 else reset = window end
      plans[i] = {1, count}
    else
      -- One more fits once the (count - limit + 1)-th oldest entry has left the window.
      local nth = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
      allowed, remaining = 0, 0
      reset = (tonumber(nth[2]) + window_us - now_us) / 1000
    end
  else
    -- Weighted two-window counter: estimate = previous * (share of window not yet elapsed) + current.
    local idx = math.floor(now_us / (window * 1000))
    local h = redis.call('HMGET', key, 's', 'c', 'p')
    local s, c, p = tonumber(h[1]), tonumber(h[2]) or 0, tonumber(h[3]) or 0
    local cur, prev = 0, 0
    if s == idx then cur, prev = c, p elseif s == idx - 1 then prev = c end
    local elapsed = (now - idx * window) / window
    local estimate = prev * (1 - elapsed) + cur
    if estimate + 1 <= limit then
      allowed = 1
      remaining = math.floor(limit - estimate - 1)
      reset = (idx + 1) * window - now
      plans[i] = {2, idx, cur, prev, s}
    else
      allowed, remaining = 0, 0
      if cur + 1 <= limit then
        -- Still this bucket: wait until the previous bucket's weight has shrunk enough.
        local need = 1 - (limit - cur - 1) / prev
        reset = math.ceil((need - elapsed) * window)
      else
        -- Next bucket: this bucket becomes "previous" and must shrink below limit - 1.
        local need = 1 - (limit - 1) / cur
        reset = math.ceil((1 - elapsed) * window + need * window)
      end
    end
  end

  reset = math.ceil(reset)
  if reset < 1 then reset = 1 end
  if allowed == 0 then admitted = 0 end
  results[3 * i - 2] = allowed
  results[3 * i - 1] = remaining
  results[3 * i] = reset
end

if admitted == 1 then
  for i = 1, n do
    local key = KEYS[i]
    local window = tonumber(ARGV[3 * i])
    local plan = plans[i]
    if plan[1] == 1 then
      -- Members must be unique: the microsecond clock plus the count seen in that microsecond.
      redis.call('ZADD', key, now_us, string.format('%s%06d-%d', t[1], tonumber(t[2]), plan[2]))
      redis.call('PEXPIRE', key, window + 1000)
    else
      local idx, cur, prev = plan[2], plan[3], plan[4]
      redis.call('HSET', key, 's', idx, 'c', cur + 1, 'p', prev)
      if plan[5] ~= idx then
        -- A new bucket (or a new key): it must live through this bucket and the next, where it
        -- is "previous". Within one bucket the TTL set at its first request already does.
        redis.call('PEXPIRE', key, 2 * window + 1000)
      end
    end
  end
else
  -- Nothing consumed: report each allowed window's remaining as it stands.
  for i = 1, n do
    if results[3 * i - 2] == 1 then results[3 * i - 1] = results[3 * i - 1] + 1 end
  end
end

local out = {admitted}
for i = 1, #results do out[i + 1] = results[i] end
return out
