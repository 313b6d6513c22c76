-- ping_time: the store's clock, for smoke-checking script loading.
-- KEYS: none. ARGV: none.
-- Returns {seconds, microseconds} from redis.call('TIME').
return redis.call('TIME')
