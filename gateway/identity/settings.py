"""Identity's schema: the `auth` block and its consumers. Composed into the whole file by
`gateway/config.py` (which also checks that each consumer's tier is a configured one)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import jwt
from pydantic import Field, field_validator, model_validator

from gateway.settings import Section

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


class ConsumerSettings(Section):
    """An API consumer. Keys are stored as SHA-256 hex digests, never in clear."""

    id: str = Field(min_length=1, max_length=128)
    tier: str = "default"
    key_sha256: str

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _SHA256_HEX.fullmatch(value):
            raise ValueError("must be the 64-hex-digit SHA-256 of the key")
        return value.lower()


Algorithm = Literal["HS256", "RS256", "ES256"]


class JwtClaims(Section):
    """Which claims name the consumer and its tier."""

    consumer: str = Field("sub", min_length=1)
    tier: str | None = Field(None, description="a claim naming a configured tier (else `default`)")
    admin: str | None = Field(
        None, description="a claim that makes the caller an admin (the admin API, PURGE): true, "
                          "`admin_value`, or a list holding it (e.g. Keycloak's roles)")
    admin_value: str = "admin"


class JwtSettings(Section):
    """Bearer JWTs beside API keys (gateway/identity/jwt_auth.py)."""

    algorithms: list[Algorithm] = Field(default_factory=lambda: list[Algorithm](["RS256"]), min_length=1)
    jwks_file: str | None = Field(None, description="a JWKS document on disk (read at start)")
    jwks_url: str | None = Field(None, description="a JWKS URL, fetched at start and in the background")
    secret_env: str | None = Field(None, description="the environment variable holding the HS256 secret")
    issuer: str | None = None
    audience: str | None = None
    leeway: float = Field(30, ge=0, le=300, description="seconds of clock skew allowed for exp / nbf")
    require_exp: bool = True
    refresh_interval: float = Field(300, gt=0, description="seconds between JWKS URL fetches")
    claims: JwtClaims = JwtClaims()

    @model_validator(mode="after")
    def _keys(self) -> JwtSettings:
        if not (self.jwks_file or self.jwks_url or self.secret_env):
            raise ValueError("needs its keys: jwks_file, jwks_url or secret_env")
        if "HS256" in self.algorithms and not (self.secret_env or self.jwks_file or self.jwks_url):
            raise ValueError("HS256 needs secret_env")
        if set(self.algorithms) - {"HS256"} and not (self.jwks_file or self.jwks_url):
            raise ValueError("RS256 / ES256 need jwks_file or jwks_url")
        if self.jwks_url and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError("jwks_url must be an http(s) URL")
        if self.jwks_file:
            try:
                document = json.loads(Path(self.jwks_file).read_text())
                jwt.PyJWKSet.from_dict(document)
            except (OSError, ValueError, jwt.PyJWKError) as exc:
                raise ValueError(f"jwks_file {self.jwks_file}: not a usable JWKS ({exc})") from None
        return self


Credential = Literal["api_key", "jwt"]


class RouteAuth(Section):
    """A route's own rule for who may call it (`routes.PREFIX.auth`), as Kong's per-route
    key-auth / jwt plugins: `require` lists the credentials accepted there; anonymous callers
    (and any other credential) get a 401. Without it a route takes what `auth` takes."""

    require: list[Credential] = Field(min_length=1)


class AuthSettings(Section):
    mode: Literal["api_keys", "headers"] = "api_keys"
    jwt: JwtSettings | None = Field(None, description="accept bearer JWTs beside API keys")
    consumers: list[ConsumerSettings] = Field(default_factory=list)
    hide_credentials: bool = Field(
        True, description="strip X-API-Key / Authorization: Bearer before proxying upstream"
    )
    admin_keys_sha256: list[str] = Field(default_factory=list)

    @field_validator("consumers")
    @classmethod
    def _distinct_keys(cls, value: list[ConsumerSettings]) -> list[ConsumerSettings]:
        digests = [c.key_sha256 for c in value]
        if len(digests) != len(set(digests)):
            raise ValueError("two consumers share the same key_sha256")
        return value

    @field_validator("admin_keys_sha256")
    @classmethod
    def _hexes(cls, value: list[str]) -> list[str]:
        for v in value:
            if not _SHA256_HEX.fullmatch(v):
                raise ValueError("each entry must be the 64-hex-digit SHA-256 of an admin key")
        return [v.lower() for v in value]
