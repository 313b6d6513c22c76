-- cache_lookup: find the stored variant for a request, judge its freshness, and on a miss try to
-- take the fill lock, all in one round trip.
-- KEYS[1] root HASH of the URL (<p>:c:{h}); KEYS[2] the URL's shared fill lock (scope 's');
-- KEYS[3] fill lock of the request's own scope (the same key for an anonymous request).
--   Variant keys are KEYS[1] .. ':' .. <vid>: same {hash tag}, named by the root (so not in KEYS).
-- ARGV[1] lock lease ms; ARGV[2] lock token; ARGV[3] may fill (1/0); ARGV[4] request no-cache (1/0);
-- ARGV[5] request max-age ms (-1 none); ARGV[6] request min-fresh ms; ARGV[7] request max-stale ms
-- (-1 none); ARGV[8] the request's scope ('s' shared, 'u:<hash>' one consumer); ARGV[9] 1 when
-- the shared scope is looked at first, usable only if stored as shareable with authenticated
-- requests; ARGV[10] 1 when a miss takes (or waits on) the shared lock, common to every consumer
-- of the URL, 0 for the request's own; ARGV[11] the versions of this URL's variants the replica
-- holds in memory, comma-separated ('' none): when the variant found is one of them, no blob is
-- returned (the replica serves its own copy); ARGV[12..] request header name, value pairs
-- (lower-case).
-- The lock of a found entry is its scope's (a revalidation); of a miss, per ARGV[10].
-- Returns {state, blob, age ms, lifetime ms, swr ms, sie ms, no-stale 0/1, got lock 0/1,
--          lock pttl ms, scope used, now µs, lock scope, variant key, version, held 0/1}
--          (variant key and version '' on a miss; held 1: the blob was left out as the
--          replica holds that version); state is fresh | stale (max-stale
--          allows) | swr | expired (needs revalidation) | miss | pass (recently uncacheable: no
--          lock); blob '' if none.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local root = KEYS[1]

-- Fields whose values are case-insensitive tokens (RFC 9110 §12.5): compared lower-cased.
local CASELESS = {['accept'] = true, ['accept-charset'] = true, ['accept-encoding'] = true,
  ['accept-language'] = true}

local function field_value(name)
  local values = {}
  for i = 12, #ARGV - 1, 2 do
    if ARGV[i] == name then
      local v = string.gsub(ARGV[i + 1], '^[ \t]+', '')
      v = string.gsub(v, '[ \t]+$', '')
      values[#values + 1] = v
    end
  end
  if #values == 0 then return '\0' end
  local joined = string.gsub(table.concat(values, ','), '[ \t]*,[ \t]*', ',')
  if CASELESS[name] then joined = string.lower(joined) end
  return joined
end

local function find_variant(scope)
  local vary = redis.call('HGET', root, scope .. '|vary')
  local secondary = ''
  if vary and vary ~= '' then
    local parts = {}
    for name in string.gmatch(vary, '[^\n]+') do
      parts[#parts + 1] = name .. '=' .. field_value(name) .. '\n'
    end
    secondary = table.concat(parts)
  end
  local vid = redis.call('HGET', root, scope .. '|v|' .. secondary)
  if not vid then return nil end
  local f = redis.call('HMGET', root .. ':' .. vid, 't', 'a', 'l', 'swr', 'sie', 'ns', 'auth', 'd', 'ver')
  if not f[8] then return nil end
  f[10] = root .. ':' .. vid
  return f
end

local scope = ARGV[8]
local found = nil
local used = scope
if ARGV[9] == '1' and scope ~= 's' then
  local shared = find_variant('s')
  if shared and shared[7] == '1' then
    found = shared
    used = 's'
  end
end
if not found then
  found = find_variant(scope)
  used = scope
end
local lock_scope = scope
if found then
  lock_scope = used
elseif ARGV[10] == '1' then
  lock_scope = 's'
end
local lock = KEYS[3]
if lock_scope == 's' then lock = KEYS[2] end

local state = 'miss'
local blob = ''
local variant, version, held = '', '', 0
local age, life, swr, sie, ns = 0, 0, 0, 0, 0
local no_cache = ARGV[4] == '1'
if found then
  age = tonumber(found[2]) + math.max(0, now - tonumber(found[1]))
  life = tonumber(found[3])
  swr = tonumber(found[4])
  sie = tonumber(found[5])
  ns = tonumber(found[6])
  blob = found[8]
  variant = found[10]
  if found[9] then
    version = found[9]
    if ARGV[11] ~= '' and string.find(',' .. ARGV[11] .. ',', ',' .. version .. ',', 1, true) then
      blob, held = '', 1
    end
  end
  local max_age = tonumber(ARGV[5])
  local min_fresh = tonumber(ARGV[6])
  local max_stale = tonumber(ARGV[7])
  if not no_cache and age < life and (max_age < 0 or age <= max_age) and life - age >= min_fresh then
    state = 'fresh'
  elseif not no_cache and ns == 0 and age >= life and max_stale >= 0 and age - life <= max_stale then
    state = 'stale'
  elseif not no_cache and ns == 0 and age >= life and age - life < swr then
    state = 'swr'
  else
    state = 'expired'
  end
else
  -- The request's own scope's marker only: what one consumer's responses were never changes
  -- how another's requests are coalesced.
  local pass = tonumber(redis.call('HGET', root, scope .. '|pass') or '0')
  if pass > now then state = 'pass' end
end

local got, pttl = 0, 0
if ARGV[3] == '1' and not no_cache and (state == 'miss' or state == 'expired' or state == 'swr') then
  if redis.call('SET', lock, ARGV[2], 'NX', 'PX', ARGV[1]) then
    got = 1
  else
    pttl = redis.call('PTTL', lock)
  end
end
-- Now in microseconds: a fill is compared with the URL's last invalidation at that resolution,
-- so a PURGE and the lookup that follows it within the same millisecond are still ordered.
return {state, blob, age, life, swr, sie, ns, got, pttl, used, tonumber(t[1]) * 1000000 + tonumber(t[2]),
  lock_scope, variant, version, held}
