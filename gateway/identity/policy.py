"""Who is calling: the first policy of the chain.

`auth.mode: api_keys` (the default) resolves the caller from an API key sent as `X-API-Key` or
`Authorization: Bearer <key>`. Keys are configured as SHA-256 hex digests; the presented key is
hashed and looked up by digest, so the clear key is never stored and the lookup time does not
depend on how much of a key an attacker guessed. An unknown key is a 401. No key at all means
the `anonymous` tier, rate-limited per client IP (`ctx.client_ip`, which honours
`X-Forwarded-For` only from trusted proxies).

Client-sent `X-User-ID` / `X-User-Tier` are always dropped in this mode and replaced by the
resolved ones (`X-User-ID` is omitted for anonymous callers), so backends can trust them. With
`auth.hide_credentials` (default on, like Kong's key-auth option of that name) the key itself is
not forwarded: backends get the identity, never the secret. A non-Bearer `Authorization`
(e.g. Basic) is not ours and passes through untouched.

An admin key (`auth.admin_keys_sha256`) is not a consumer: with `PURGE` (in either mode) it
makes the caller `ADMIN` (`Consumer.admin`), on its own rate-limit quota; any other method with
it is a 401. `admin_required` is the one admin check (PURGE on the hot path, the control plane's
`POST /admin/cache/purge`).

With `auth.jwt` a Bearer token that is a JWT is verified instead (gateway/identity/jwt_auth.py):
its claims name the consumer and tier; a bad token is a 401 with `error="invalid_token"`.

`auth.mode: headers` keeps the seed's behaviour and trusts `X-User-ID` / `X-User-Tier` as sent
(an unknown tier means `default`). It is safe only behind a trusted proxy that authenticates
callers and overwrites those headers; anyone reaching the gateway directly can pick a tier.

The `auth` schema is `gateway/identity/settings.py`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from gateway.config import GatewayConfig
from gateway.context import Consumer, RequestContext, Response
from gateway.identity.directory import ConsumerDirectory
from gateway.identity.jwt_auth import JWT_SHAPE, JwtVerifier, TokenRejected
from gateway.identity.settings import ConsumerSettings, JwtSettings
from gateway.policy import Policy
from gateway.problem import problem
from gateway.store import StoreBatch

ANONYMOUS_TIER = "anonymous"
DEFAULT_TIER = "default"
MAX_USER_ID = 128  # same bound as a configured consumer id

_X_API_KEY = b"x-api-key"
_AUTHORIZATION = b"authorization"
_X_USER_ID = b"x-user-id"
_X_USER_TIER = b"x-user-tier"
_CHALLENGE = (b"www-authenticate", b'Bearer realm="gateway", error="invalid_token"')


def key_digest(key: str | bytes) -> str:
    """The SHA-256 hex digest of an API key, as written in `auth.consumers[].key_sha256`."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key in `X-API-Key` (first) or `Authorization: Bearer`, or None."""
    bearer = None
    for name, value in headers:
        if name == _X_API_KEY:
            return value.strip()
        if name == _AUTHORIZATION and bearer is None:
            bearer = bearer_token(value)
    return bearer


def bearer_token(authorization: bytes) -> bytes | None:
    """The token of an `Authorization: Bearer ...` value (the scheme case-insensitive), or None."""
    scheme, _, token = authorization.strip().partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else None


# An admin key is not a consumer: it may only PURGE, on its own rate-limit quota.
ADMIN = Consumer(id="admin", tier=DEFAULT_TIER, authenticated=True, rate_key="admin", admin=True)
_SOMEONE = Consumer(id="", tier=DEFAULT_TIER, authenticated=True, rate_key="", admin=False)


def admin_from_headers(config: GatewayConfig, headers: Iterable[tuple[bytes, bytes]]) -> Consumer | None:
    """For the control plane: ADMIN for an admin key, a non-admin for any other key, None
    without a key (then `admin_required` says 401, 403, or nothing)."""
    key = presented_key(headers)
    if not key:
        return None
    return ADMIN if admin_key_matches(config, key) else _SOMEONE


def admin_caller(gateway: Any, headers: Iterable[tuple[bytes, bytes]]) -> Consumer | None:
    """The control plane's caller as an admin check sees it: through the running identity
    policy (admin keys, and JWTs with the admin claim), or by admin keys alone."""
    policy = getattr(gateway, "policies", {}).get("identity")
    if isinstance(policy, IdentityPolicy):
        return policy.admin_caller(headers)
    return admin_from_headers(gateway.config, headers)


def admin_required(consumer: Consumer | None) -> Response | None:
    """None for an admin; else the 401 (no key) or 403 (a key that is not an admin's) problem.
    The one admin check: PURGE on the hot path and `POST /admin/cache/purge` both use it."""
    if consumer is not None and consumer.admin:
        return None
    if consumer is None or not consumer.authenticated:
        return problem(401, "purging the cache needs an admin key (X-API-Key or Authorization: Bearer)",
                       kind="admin-key-required",
                       headers=[(b"www-authenticate", b'Bearer realm="gateway-admin"')])
    return problem(403, "this key may not purge the cache", kind="not-an-admin-key")


def admin_key_matches(config: GatewayConfig, presented: str | bytes | None) -> bool:
    """True when `presented` is one of `auth.admin_keys_sha256` (constant-time per digest)."""
    if not presented:
        return False
    digest = key_digest(presented)
    found = False
    for expected in config.auth.admin_keys_sha256:
        found |= hmac.compare_digest(digest, expected)
    return found


class IdentityPolicy(Policy):
    """Resolves `ctx.consumer` and the trusted identity headers sent upstream (a `stage` only:
    it answers 401 or lets the request on, and stages nothing)."""

    name = "identity"

    def __init__(
        self,
        consumers: Iterable[ConsumerSettings],
        tiers: Iterable[str],
        *,
        mode: str = "api_keys",
        hide_credentials: bool = True,
        admin_digests: Iterable[str] = (),
        jwt: JwtSettings | None = None,
        required: Mapping[str, frozenset[str]] | None = None,
        directory: ConsumerDirectory | None = None,
    ) -> None:
        """`directory`: the run-time consumers (gateway/identity/directory.py), looked up after
        the configured ones."""
        self.directory = directory
        self._required = dict(required or {})  # route prefix -> the credentials it accepts
        self._admin_digests = frozenset(admin_digests)
        self.jwt = JwtVerifier(jwt, frozenset(tiers), DEFAULT_TIER) if jwt is not None else None
        self.mode = mode
        self.hide_credentials = hide_credentials
        self.tiers = frozenset(tiers)
        # Keyed by digest: the lookup hashes what the client sent, so timing reveals nothing
        # about the stored keys.
        self._by_digest = {
            c.key_sha256: Consumer(id=c.id, tier=c.tier, authenticated=True, rate_key="c:" + c.id)
            for c in consumers
        }

    @classmethod
    def from_config(cls, config: GatewayConfig, directory: ConsumerDirectory | None = None) -> IdentityPolicy:
        return cls(
            config.auth.consumers,
            config.rate_limits,
            mode=config.auth.mode,
            hide_credentials=config.auth.hide_credentials,
            admin_digests=config.auth.admin_keys_sha256,
            jwt=config.auth.jwt,
            required={prefix: frozenset(route.auth.require)
                      for prefix, route in config.routes.items() if route.auth is not None},
            directory=directory,
        )

    def admin_caller(self, headers: Iterable[tuple[bytes, bytes]]) -> Consumer | None:
        """For the control plane: ADMIN for an admin key, a JWT consumer with the admin claim
        (or without it: not an admin), a non-admin for any other key, None without one (then
        `admin_required` says 401, 403, or nothing)."""
        key = presented_key(headers)
        if not key:
            return None
        if self._is_admin(key):
            return ADMIN
        if self.jwt is not None and JWT_SHAPE.fullmatch(key):
            try:
                return self.jwt.consumer(key)
            except TokenRejected:
                return None
        return _SOMEONE

    async def start(self) -> None:
        if self.jwt is not None:
            await self.jwt.start()

    async def close(self) -> None:
        if self.jwt is not None:
            await self.jwt.close()

    def stage(self, ctx: RequestContext, batch: StoreBatch) -> Response | None:
        if self.mode == "headers":
            if ctx.method == "PURGE" and self._is_admin(presented_key(ctx.headers)):
                ctx.consumer = ADMIN
                return None
            return self._from_headers(ctx)
        return self._from_key(ctx)

    def _is_admin(self, key: bytes | None) -> bool:
        return bool(key) and bool(self._admin_digests) and key_digest(key) in self._admin_digests  # type: ignore[arg-type]

    async def metrics(self) -> dict[str, object]:
        runtime = len(self.directory.records) if self.directory is not None else 0
        return {"mode": self.mode, "consumers": len(self._by_digest), "runtime_consumers": runtime}

    # -- api_keys ------------------------------------------------------------------------
    def _from_key(self, ctx: RequestContext) -> Response | None:
        # One pass over the headers: find the key, drop client-sent identity and, when hiding
        # credentials, every X-API-Key and Bearer Authorization (a Bearer token is an API key
        # in this mode). X-API-Key wins over Bearer when both are sent.
        api_key: bytes | None = None
        bearer: bytes | None = None
        hide = self.hide_credentials
        kept: list[tuple[bytes, bytes]] = []
        for name, value in ctx.headers:
            if name == _X_API_KEY:
                if api_key is None:
                    api_key = value.strip()
                if hide:
                    continue
            elif name == _AUTHORIZATION:
                token = bearer_token(value)
                if token is not None:
                    if bearer is None:
                        bearer = token
                    if hide:
                        continue
            elif name == _X_USER_ID or name == _X_USER_TIER:
                continue
            kept.append((name, value))
        key = api_key if api_key is not None else bearer
        credential = None
        if key is None:
            consumer = anonymous(ctx.client_ip)
        elif key is bearer and self.jwt is not None and JWT_SHAPE.fullmatch(key):
            try:
                consumer = self.jwt.consumer(key)
            except TokenRejected as exc:
                return problem(401, f"The bearer token is not valid: {exc}.", request_id=ctx.request_id,
                               kind="invalid-token", headers=[_token_challenge(str(exc))])
            credential = "jwt"
        else:
            credential = "api_key"
            found = None
            if key:
                digest = key_digest(key)
                found = self._by_digest.get(digest)
                if found is None and self.directory is not None:
                    found = self.directory.lookup(digest)
            if found is None and ctx.method == "PURGE" and self._is_admin(key):
                ctx.consumer = ADMIN  # the cache lets it purge (admin_required)
                return None
            if found is None:
                return problem(
                    401,
                    "The API key is not valid." if key else "The API key is empty.",
                    request_id=ctx.request_id,
                    kind="invalid-api-key",
                    headers=[_CHALLENGE],
                )
            consumer = found
        required = self._required.get(ctx.route.prefix) if self._required else None
        if required is not None and credential not in required:
            wanted = " or ".join("a bearer JWT" if c == "jwt" else "an API key" for c in sorted(required))
            return problem(401, f"This route needs {wanted}.", request_id=ctx.request_id,
                           kind="credentials-required",
                           headers=[(b"www-authenticate", b'Bearer realm="gateway"')])
        if consumer.authenticated:
            kept.append((_X_USER_ID, consumer.id.encode()))
        kept.append((_X_USER_TIER, consumer.tier.encode()))
        ctx.headers = kept
        ctx.consumer = consumer
        return None

    # -- headers (trusted proxy in front) -------------------------------------------------
    def _from_headers(self, ctx: RequestContext) -> Response | None:
        raw_id = ctx.header(_X_USER_ID)
        user_id = raw_id.decode("latin-1").strip() if raw_id is not None else ""
        if len(user_id) > MAX_USER_ID:
            return problem(
                400,
                f"X-User-ID is longer than {MAX_USER_ID} characters.",
                request_id=ctx.request_id,
            )
        raw_tier = ctx.header(_X_USER_TIER)
        tier = raw_tier.decode("latin-1").strip() if raw_tier is not None else ""
        if not user_id:
            consumer = anonymous(ctx.client_ip)
        else:
            if tier not in self.tiers:
                tier = DEFAULT_TIER
            consumer = Consumer(id=user_id, tier=tier, authenticated=True, rate_key="u:" + user_id)
        ctx.consumer = consumer
        ctx.remove_header(_X_USER_TIER)
        ctx.headers.append((_X_USER_TIER, consumer.tier.encode()))
        return None


def _token_challenge(reason: str) -> tuple[bytes, bytes]:
    """RFC 6750 §3: the error and a description without quotes or backslashes."""
    description = reason.replace("\\", "").replace('"', "'")[:200]
    return (b"www-authenticate",
            f'Bearer realm="gateway", error="invalid_token", error_description="{description}"'.encode())


def anonymous(client_ip: str) -> Consumer:
    """A caller without credentials: the anonymous tier, counted per client IP."""
    return Consumer(
        id=ANONYMOUS_TIER, tier=ANONYMOUS_TIER, authenticated=False, rate_key="ip:" + client_ip
    )
