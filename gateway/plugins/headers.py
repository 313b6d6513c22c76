"""`headers`: add, set or remove request and response header fields, per route.

    plugins:
      - use: headers
        routes: ["/api/orders"]
        config:
          request:
            set: {X-Request-Source: gateway, X-Consumer: "{consumer}"}
            add: {X-Env: prod}          # only when the request has no such field
            remove: [X-Debug]
          response:
            set: {Cache-Control: no-store}
            remove: [Server-Timing]

Values may hold `{request_id}` and `{consumer}` (the verified consumer's id, empty for an
anonymous caller); `{{` and `}}` are literal braces. Request fields change before the request
goes upstream (after identity, so the consumer is known, with the default `at`), response
fields before the response goes out, the gateway's own included (`X-Cache`, `RateLimit-*`).
Fields that carry the message's framing or the gateway's identity (`Host`, `Content-Length`,
`Transfer-Encoding`, `Connection`, `X-User-ID`, `X-User-Tier`, ...) cannot be changed here.
"""

from __future__ import annotations

import string

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.context import RequestContext, Response
from gateway.plugins.fields import PROTECTED, is_field_name, is_field_value
from gateway.policy import Handler, Policy, PolicyDeps
from gateway.store import StoreBatch

_PLACEHOLDERS = frozenset({"request_id", "consumer"})


class FieldEdits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    add: dict[str, str] = Field(default_factory=dict, description="added when the field is absent")
    set: dict[str, str] = Field(default_factory=dict, description="replace every value of the field")
    remove: list[str] = Field(default_factory=list, description="field names to drop")

    @field_validator("add", "set")
    @classmethod
    def _pairs(cls, value: dict[str, str]) -> dict[str, str]:
        for name, template in value.items():
            _check_name(name)
            if not is_field_value(template):
                raise ValueError(f"the value of {name} holds a control character (CR, LF, NUL ...) "
                                 "or one outside Latin-1")
            for _, field, _, _ in string.Formatter().parse(template):
                if field is not None and field not in _PLACEHOLDERS:
                    raise ValueError(f"the value of {name} uses {{{field}}}; only {{request_id}} "
                                     "and {consumer} are known")
        return value

    @field_validator("remove")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            _check_name(name)
        return value

    @model_validator(mode="after")
    def _once(self) -> FieldEdits:
        seen: set[str] = set()
        for name in [*self.add, *self.set, *self.remove]:
            if name.lower() in seen:
                raise ValueError(f"{name} is edited twice (add, set and remove exclude each other)")
            seen.add(name.lower())
        return self


def _check_name(name: str) -> None:
    if not is_field_name(name):
        raise ValueError(f"{name!r} is not a header field name")
    if name.lower() in PROTECTED:
        raise ValueError(f"{name} cannot be changed by the headers plugin")


class _Edits:
    """One direction's edits, compiled: lower-case byte names, templates split once."""

    __slots__ = ("add", "set", "drop")

    def __init__(self, edits: FieldEdits) -> None:
        self.add = [(n.lower().encode(), _Template(v)) for n, v in edits.add.items()]
        self.set = [(n.lower().encode(), _Template(v)) for n, v in edits.set.items()]
        self.drop = frozenset(n.lower().encode() for n in [*edits.remove, *edits.set])

    def __bool__(self) -> bool:
        return bool(self.add or self.set or self.drop)

    def apply(self, headers: list[tuple[bytes, bytes]], ctx: RequestContext) -> list[tuple[bytes, bytes]]:
        drop = self.drop
        out = [(k, v) for k, v in headers if k not in drop] if drop else list(headers)
        for name, template in self.set:
            out.append((name, template.render(ctx)))
        if self.add:
            present = {k for k, _ in out}
            for name, template in self.add:
                if name not in present:
                    out.append((name, template.render(ctx)))
        return out


class _Template:
    __slots__ = ("text", "constant")

    def __init__(self, text: str) -> None:
        self.text = text
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        # format() turns {{ }} into braces; a value without placeholders is encoded once.
        self.constant = None if fields else text.format().encode("latin-1")

    def render(self, ctx: RequestContext) -> bytes:
        if self.constant is not None:
            return self.constant
        consumer = ctx.consumer.id if ctx.consumer is not None and ctx.consumer.authenticated else ""
        return self.text.format(request_id=ctx.request_id, consumer=consumer).encode("latin-1")


class HeaderTransform(Policy):
    """Edits request fields in `stage`, response fields in `handle` (see the module doc)."""

    name = "headers"

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        request: FieldEdits = FieldEdits()
        response: FieldEdits = FieldEdits()

    def __init__(self, settings: Settings, deps: PolicyDeps) -> None:
        self.request = _Edits(settings.request)
        self.response = _Edits(settings.response)

    def stage(self, ctx: RequestContext, batch: StoreBatch) -> None:
        if self.request:
            ctx.headers = self.request.apply(ctx.headers, ctx)

    async def handle(self, ctx: RequestContext, staged: None, call_next: Handler) -> Response:
        response = await call_next(ctx)
        edits = self.response
        if edits:
            response.headers = edits.apply(response.headers, ctx)
            if edits.drop and ctx.response_headers:  # the gateway's own (X-Cache, RateLimit-*)
                ctx.response_headers = [(k, v) for k, v in ctx.response_headers if k not in edits.drop]
        return response
