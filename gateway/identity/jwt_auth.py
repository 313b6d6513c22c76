"""JWT bearer tokens beside API keys (`auth.jwt`): verified with PyJWT, keys from a JWKS.

A Bearer token that is a JWT (three base64url parts) is verified when `auth.jwt` is set:
signature (only the configured algorithms: HS256, RS256, ES256; never `none`), `exp` and `nbf`
with `leeway` seconds, `iss` and `aud` when configured. Its claims name the consumer
(`claims.consumer`, default `sub`) and tier (`claims.tier`; a tier that is not configured means
`default`). Anything wrong is a 401 problem with `WWW-Authenticate: Bearer error="invalid_token"`.

Keys: a JWKS file (read at start), a JWKS URL (fetched at start and every `refresh_interval` in
the background, and again at most once a minute when a token names an unknown `kid`, never on
the request path: such a token is refused until the keys arrive), or an HS256 secret from an
environment variable (`secret_env`; a secret never lives in the config file). Verified tokens
are remembered (bounded) until they expire, so a client reusing one pays the signature check
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import jwt

from gateway.context import Consumer
from gateway.identity.settings import JwtSettings

log = logging.getLogger("gateway.identity")

JWT_SHAPE = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
REMEMBERED = 10_000  # verified tokens kept
UNKNOWN_KID_REFETCH = 60.0  # seconds between refetches caused by tokens naming unknown keys


class TokenRejected(Exception):
    """Why a token was refused (goes into the 401's error_description)."""


class JwtVerifier:
    """Verifies bearer JWTs against the configured keys; turns their claims into a Consumer."""

    def __init__(self, settings: JwtSettings, tiers: frozenset[str], default_tier: str) -> None:
        self.settings = settings
        self.tiers = tiers
        self.default_tier = default_tier
        self.algorithms = list(settings.algorithms)
        self._keys: dict[str | None, Any] = {}  # kid -> key (None: the only key, or the secret)
        self._remembered: OrderedDict[bytes, tuple[Consumer, float]] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._last_unknown_fetch = 0.0
        self.keys_loaded_at: float | None = None
        if settings.secret_env:
            secret = os.environ.get(settings.secret_env)
            if secret:
                self._keys[None] = secret.encode()
                self.keys_loaded_at = time.time()
            else:
                log.error("auth.jwt.secret_env: %s is not set; HS256 tokens are refused",
                          settings.secret_env)
        if settings.jwks_file:
            self._load(json.loads(Path(settings.jwks_file).read_text()))

    # -- keys ----------------------------------------------------------------------------------
    def _load(self, document: dict[str, Any]) -> None:
        keys: dict[str | None, Any] = {k: v for k, v in self._keys.items() if isinstance(v, bytes)}
        found = jwt.PyJWKSet.from_dict(document).keys
        for item in found:
            keys[item.key_id] = item.key
        if len(found) == 1:
            keys.setdefault(None, found[0].key)
        self._keys = keys
        self.keys_loaded_at = time.time()

    async def start(self) -> None:
        if self.settings.jwks_url and self._task is None:
            await self._fetch()
            self._task = asyncio.get_running_loop().create_task(self._refresh(), name="jwks refresh")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.settings.refresh_interval)
            await self._fetch()

    async def _fetch(self) -> None:
        import httpx

        url = self.settings.jwks_url
        assert url
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.get(url)
                response.raise_for_status()
                self._load(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWKError) as exc:
            log.error("auth.jwt.jwks_url: could not load the keys from %s: %s", url, exc)

    # -- tokens --------------------------------------------------------------------------------
    def consumer(self, token: bytes) -> Consumer:
        """The consumer a valid token names; raises TokenRejected."""
        now = time.time()
        remembered = self._remembered.get(token)
        if remembered is not None:
            consumer, expires = remembered
            if now < expires + self.settings.leeway:
                self._remembered.move_to_end(token)
                return consumer
            del self._remembered[token]
        claims = self._verify(token)
        consumer = self._consumer(claims)
        expires = float(claims["exp"]) if isinstance(claims.get("exp"), int | float) else now + 300
        self._remembered[token] = (consumer, min(expires, now + 3600))
        if len(self._remembered) > REMEMBERED:
            self._remembered.popitem(last=False)
        return consumer

    def _verify(self, token: bytes) -> dict[str, Any]:
        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"malformed token: {exc}") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise TokenRejected(f"algorithm {algorithm!r} is not accepted")
        kid = header.get("kid")
        key = self._keys.get(kid) if kid is not None else self._keys.get(None)
        if key is None and kid is not None and algorithm == "HS256":
            key = self._keys.get(None)
        if key is None:
            self._unknown_kid()
            raise TokenRejected("no key for this token" + (f" (kid {kid!r})" if kid else ""))
        if (algorithm == "HS256") != isinstance(key, bytes):
            raise TokenRejected("the key does not match the algorithm")
        options: Any = {"require": ["exp"] if settings.require_exp else []}
        try:
            return jwt.decode(token, key, algorithms=[algorithm], audience=settings.audience,
                              issuer=settings.issuer, leeway=settings.leeway, options=options)
        except jwt.ExpiredSignatureError:
            raise TokenRejected("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("the token is from another issuer") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"invalid token: {exc}") from None

    def _unknown_kid(self) -> None:
        """A token names a key we do not have (a rotation): refetch soon, in the background."""
        if not self.settings.jwks_url:
            return
        now = time.monotonic()
        if now - self._last_unknown_fetch < UNKNOWN_KID_REFETCH:
            return
        self._last_unknown_fetch = now
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(self._fetch(), name="jwks refetch")

    def _consumer(self, claims: dict[str, Any]) -> Consumer:
        names = self.settings.claims
        subject = claims.get(names.consumer)
        if not isinstance(subject, str) or not 0 < len(subject) <= 128:
            raise TokenRejected(f"the {names.consumer!r} claim must be a string of 1-128 characters")
        tier = claims.get(names.tier) if names.tier else None
        if not isinstance(tier, str) or tier not in self.tiers:
            tier = self.default_tier
        admin = False
        if names.admin:
            granted = claims.get(names.admin)
            admin = (granted is True or granted == names.admin_value
                     or (isinstance(granted, list) and names.admin_value in granted))
        return Consumer(id=subject, tier=tier, authenticated=True, rate_key="j:" + subject, admin=admin)
