"""The shared RFC 9111 response cache: CachePolicy on the hot path, its Redis store and rules."""
