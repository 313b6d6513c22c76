-- usage_add: add one replica's batch of per-consumer usage deltas to the cluster-wide hash,
-- keeping the hash bounded.
-- KEYS: the usage hash, gw:rl:usage
-- ARGV: max_consumers, then field, amount pairs; a field is "<consumer>|<kind>".
-- A field of a consumer the hash already tracks, and every event field ("_events|..."), is
-- added as is. A new consumer is tracked while fewer than max_consumers are (counted in the
-- "_tracked" field); past that, its counts go to "_other|<kind>". So the hash holds at most
-- max_consumers consumers, however many distinct ids clients send (headers auth mode).
-- Returns the number of deltas that went to "_other".
local key = KEYS[1]
local cap = tonumber(ARGV[1])
local before = tonumber(redis.call('HGET', key, '_tracked') or '0')
local tracked = before
local overflow = 0
for i = 2, #ARGV, 2 do
  local field, amount = ARGV[i], tonumber(ARGV[i + 1])
  local name, kind = string.match(field, '^(.*)|([^|]*)$')
  if name == nil then
    name, kind = field, 'count'
  end
  local known = name == '_events' or name == '_other'
  if not known then
    known = redis.call('HEXISTS', key, name .. '|admitted') == 1
      or redis.call('HEXISTS', key, name .. '|rejected') == 1
  end
  if not known and tracked < cap then
    tracked = tracked + 1
    known = true
  end
  if known then
    redis.call('HINCRBY', key, field, amount)
  else
    redis.call('HINCRBY', key, '_other|' .. kind, amount)
    overflow = overflow + 1
  end
end
if tracked ~= before then
  redis.call('HSET', key, '_tracked', tracked)
end
return overflow
