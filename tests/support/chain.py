"""One driver for the policy tests: the real `PolicyChain`, driven the way the hot path drives it.

`drive` stages every policy, sends the batch once, runs the handles around a stand-in terminal,
reads the response body as the engine would (stopping once Content-Length bytes went out),
releases it, then runs the `after` phases. The policy tests of every package go through it, so
they exercise the chain's own lifecycle, not a copy of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.context import Headers, RequestContext, Response
from gateway.policy import Handler, PolicyChain
from gateway.store import Store


@dataclass
class Sent:
    """What the client got: the status, every header (the response's and the policies'), the body."""

    response: Response
    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        for key, value in self.headers:
            if key == wanted:
                return value.decode("latin-1")
        return None


async def read_body(ctx: RequestContext, response: Response) -> bytes:
    body = response.body
    if response.stream is not None:
        length = response.header(b"content-length")
        remaining = int(length) if length is not None and length.isdigit() else -1
        chunks = []
        async for chunk in response.stream:
            chunks.append(chunk)
            remaining -= len(chunk)
            if remaining == 0:  # the engine stops asking once Content-Length bytes went out
                break
        body = b"".join(chunks)
    if response.close is not None:
        response.close()
    return b"" if ctx.method == "HEAD" else body


async def drive(policies: Sequence[Any] | PolicyChain, store: Store, ctx: RequestContext,
                terminal: Handler | None = None, *, after: bool = True) -> Sent:
    """One request through the chain; `after=False` leaves the after phases out (to run later
    with `finish`)."""
    chain = policies if isinstance(policies, PolicyChain) else PolicyChain(policies, terminal or ok, store)
    response = await chain(ctx)
    body = await read_body(ctx, response)
    if after:
        await chain.after(ctx, response)
    return Sent(response, response.status, response.headers + ctx.response_headers, body)


async def finish(chain: PolicyChain, ctx: RequestContext, sent: Sent) -> None:
    """The after phases of a request driven with `after=False`."""
    await chain.after(ctx, sent.response)


async def ok(ctx: RequestContext) -> Response:
    """A terminal that answers 200."""
    return Response(200, [(b"content-type", b"text/plain")], b"ok")
