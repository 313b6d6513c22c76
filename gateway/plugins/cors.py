"""`cors`: Cross-Origin Resource Sharing (the Fetch standard's CORS protocol), per route.

    plugins:
      - use: cors
        routes: ["/api/products"]
        config:
          origins: ["https://shop.example.com"]   # or ["*"]
          methods: [GET, POST]                     # allowed in preflights
          headers: [Content-Type, X-API-Key]       # allowed request fields (default: those asked for)
          exposed_headers: [X-Request-ID]
          credentials: true                        # cookies / Authorization across origins
          max_age: 600                             # seconds a browser may cache a preflight

A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered by the
gateway itself, 204, before identity and rate limiting (the default `at` is `first`: browsers
send preflights without credentials); it never reaches the upstream. An allowed origin's other
requests get `Access-Control-Allow-Origin` (and `-Credentials`, `-Expose-Headers`) on whatever
the answer is, the gateway's own refusals included (a 401 or 429 the page can read), with
`Vary: Origin`; an upstream's own `Access-Control-*` fields are replaced, never doubled. A
disallowed origin gets no CORS fields: the browser refuses to hand the response to the page.
The fields go on the response sent, never into a shared cache entry.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.context import RequestContext, Response
from gateway.plugins.fields import is_field_name
from gateway.policy import Handler, Policy, PolicyDeps
from gateway.store import StoreBatch

_ORIGIN = b"origin"
_REQUEST_METHOD = b"access-control-request-method"
_REQUEST_HEADERS = b"access-control-request-headers"
_VARY = (b"vary", b"Origin")


class Cors(Policy):
    name = "cors"
    default_at = "first"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        origins: list[str] = Field(description='allowed origins (scheme://host[:port]) or ["*"]')
        methods: list[str] = Field(default_factory=lambda: ["GET", "HEAD", "POST", "PUT", "PATCH",
                                                            "DELETE", "OPTIONS"])
        headers: list[str] | None = Field(None, description="allowed request fields; None: as asked")
        exposed_headers: list[str] = Field(default_factory=list)
        credentials: bool = False
        max_age: int | None = Field(600, ge=0, le=86_400)

        @field_validator("origins")
        @classmethod
        def _origins(cls, value: list[str]) -> list[str]:
            if not value:
                raise ValueError("list at least one origin, or '*'")
            for origin in value:
                if origin == "*":
                    continue
                parts = urlsplit(origin)
                if parts.scheme not in ("http", "https") or not parts.netloc or \
                        parts.path or parts.query or parts.fragment or "@" in parts.netloc:
                    raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], nothing more)")
            return value

        @field_validator("methods", "exposed_headers", "headers")
        @classmethod
        def _tokens(cls, value: list[str] | None) -> list[str] | None:
            for item in value or ():
                if not is_field_name(item):
                    raise ValueError(f"{item!r} is not a method or field name")
            return value

        @model_validator(mode="after")
        def _credentials(self) -> Cors.Settings:
            if self.credentials and "*" in self.origins:
                # The Fetch standard refuses `*` with credentials; echoing any origin instead
                # would let every site read responses with the user's cookies.
                raise ValueError("credentials need the origins listed, not '*'")
            return self

    def __init__(self, settings: Settings, deps: PolicyDeps) -> None:
        self.any_origin = "*" in settings.origins
        self.origins = frozenset(o.lower().encode() for o in settings.origins if o != "*")
        self.methods = ", ".join(m.upper() for m in settings.methods).encode()
        self.headers = ", ".join(settings.headers).encode() if settings.headers is not None else None
        self.credentials = settings.credentials
        self.max_age = str(settings.max_age).encode() if settings.max_age is not None else None
        simple: list[tuple[bytes, bytes]] = []
        if settings.credentials:
            simple.append((b"access-control-allow-credentials", b"true"))
        if settings.exposed_headers:
            simple.append((b"access-control-expose-headers", ", ".join(settings.exposed_headers).encode()))
        self._extra = simple

    def _allow_origin(self, origin: bytes) -> bytes | None:
        if self.any_origin:
            return b"*"
        return origin if origin.lower() in self.origins else None

    def stage(self, ctx: RequestContext, batch: StoreBatch) -> bytes | Response | None:
        origin = asked_method = asked_headers = None
        for name, value in ctx.headers:
            if name == _ORIGIN:
                origin = value
            elif name == _REQUEST_METHOD:
                asked_method = value
            elif name == _REQUEST_HEADERS:
                asked_headers = value
        if origin is None:
            return None  # not a cross-origin request: nothing to do
        allowed = self._allow_origin(origin)
        if ctx.method == "OPTIONS" and asked_method is not None:
            return self._preflight(allowed, asked_headers)
        if allowed is None:
            return None
        fields = ctx.response_headers
        fields.append((b"access-control-allow-origin", allowed))
        if not self.any_origin:
            fields.append(_VARY)
        fields.extend(self._extra)
        return allowed  # staged: the upstream's own CORS fields are dropped on the way back

    def _preflight(self, allowed: bytes | None, asked_headers: bytes | None) -> Response:
        headers: list[tuple[bytes, bytes]] = [] if self.any_origin else [_VARY]
        if allowed is not None:
            headers.append((b"access-control-allow-origin", allowed))
            headers.append((b"access-control-allow-methods", self.methods))
            permitted = self.headers if self.headers is not None else asked_headers
            if permitted:
                headers.append((b"access-control-allow-headers", permitted))
            if self.max_age is not None:
                headers.append((b"access-control-max-age", self.max_age))
            if self.credentials:
                headers.append((b"access-control-allow-credentials", b"true"))
        return Response(204, headers)

    async def handle(self, ctx: RequestContext, staged: bytes | None, call_next: Handler) -> Response:
        response = await call_next(ctx)
        if staged is not None and any(k.startswith(b"access-control-") for k, _ in response.headers):
            response.headers = [(k, v) for k, v in response.headers if not k.startswith(b"access-control-")]
        return response
