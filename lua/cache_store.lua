-- cache_store: store one response variant, bound the variants, release the fill lock and wake
-- the waiters of every replica.
-- KEYS[1] root HASH of the URL; KEYS[2] the fill lock held (the URL's shared lock or the
-- consumer's own); KEYS[3] invalidation time key.
--   The variant key is KEYS[1] .. ':' .. <vid> (same {hash tag}).
-- ARGV[1] lock token ('' if none held); ARGV[2] scope stored in; ARGV[3] Vary names joined by '\n';
-- ARGV[4] secondary key; ARGV[5] age at store ms; ARGV[6] freshness lifetime ms;
-- ARGV[7] stale-while-revalidate ms; ARGV[8] stale-if-error ms; ARGV[9] no-stale 0/1;
-- ARGV[10] shareable with authenticated requests 0/1; ARGV[11] retention ms (Redis TTL);
-- ARGV[12] entry blob; ARGV[13] max variants per scope; ARGV[14] pub/sub channel;
-- ARGV[15] wake-up message; ARGV[16] lookup time µs (a fill that looked up before the last
-- invalidation is dropped; 0 to skip the check); ARGV[17] the version (a new random id per store:
-- what replicas holding the entry in memory compare, see cache_lookup).
-- Returns {'stored', variant key, evicted variant keys...} or {'invalidated'}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local root, lock = KEYS[1], KEYS[2]
local scope = ARGV[2]

local function release()
  if ARGV[1] ~= '' and redis.call('GET', lock) == ARGV[1] then redis.call('DEL', lock) end
  redis.call('PUBLISH', ARGV[14], ARGV[15])
end

local since = tonumber(ARGV[16])
if since > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= since then
  release()
  return {'invalidated'}
end

local evicted = {}
local prefix = scope .. '|v|'
local function variants()
  local out = {}
  local all = redis.call('HGETALL', root)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, #prefix) == prefix then out[#out + 1] = {all[i], all[i + 1]} end
  end
  return out
end
local function drop(v)
  redis.call('DEL', root .. ':' .. v[2])
  redis.call('HDEL', root, v[1])
  evicted[#evicted + 1] = root .. ':' .. v[2]
end

-- A different set of Vary fields makes the old secondary keys meaningless.
local vary_field = scope .. '|vary'
if (redis.call('HGET', root, vary_field) or '') ~= ARGV[3] then
  for _, v in ipairs(variants()) do drop(v) end
  redis.call('HSET', root, vary_field, ARGV[3])
end

local field = prefix .. ARGV[4]
local vid = redis.call('HGET', root, field)
if not vid then
  vid = tostring(redis.call('HINCRBY', root, 'seq', 1))
  redis.call('HSET', root, field, vid)
end
local vkey = root .. ':' .. vid
local keep = tonumber(ARGV[11])
redis.call('DEL', vkey)
redis.call('HSET', vkey, 't', tostring(now), 'a', ARGV[5], 'l', ARGV[6], 'swr', ARGV[7],
  'sie', ARGV[8], 'ns', ARGV[9], 'auth', ARGV[10], 'd', ARGV[12], 'ver', ARGV[17])
redis.call('PEXPIRE', vkey, keep)
if redis.call('PTTL', root) < keep then redis.call('PEXPIRE', root, keep) end
redis.call('HDEL', root, scope .. '|pass')

local list = variants()
local max = tonumber(ARGV[13])
if #list > max then
  local aged = {}
  for _, v in ipairs(list) do
    local stored = tonumber(redis.call('HGET', root .. ':' .. v[2], 't') or '0')
    aged[#aged + 1] = {stored, v}
  end
  table.sort(aged, function(x, y) return x[1] < y[1] end)
  for i = 1, #list - max do
    if aged[i][2][2] ~= vid then drop(aged[i][2]) end
  end
end

release()
local out = {'stored', vkey}
for _, k in ipairs(evicted) do out[#out + 1] = k end
return out
