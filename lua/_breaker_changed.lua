-- _breaker_changed: included (`--@include _breaker_changed`) by the breaker scripts that change a
-- target's state; it uses their `t` (the reply of TIME). Not a script by itself.
-- A change: bump the target's version (the Redis clock in µs, never backwards, so it still grows
-- after a FLUSHALL or a restart) and publish it; returns the message.
local function changed(key, code, remaining, channel)
  local ver = string.format('%.0f', math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]),
    (tonumber(redis.call('HGET', key, 'v')) or 0) + 1))
  redis.call('HSET', key, 'v', ver)
  local message = key .. '|' .. code .. '|' .. remaining .. '|' .. ver
  redis.call('PUBLISH', channel, message)
  return message
end
