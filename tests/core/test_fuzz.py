"""Property-based: whatever a client sends, the gateway answers with a clear status, never a 500
or a hang, and whatever it forwards stays inside its route with the identity it resolved.

Requests are written as raw bytes into the engine in-process (so raw paths and header bytes are
exactly what hypothesis drew, and meet the engine's own parsing and limits), limited to what an
HTTP/1.1 client would send (token methods and header names, visible-ASCII/obs-text header
values, ASCII request targets). Every policy is on (embedded
store); the three services are one echo backend that reports what it received.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.engine.server import Server
from gateway.engine.testclient import exchange
from gateway.entry import GatewayApp
from gateway.serve import limits_from
from tests.support.processes import free_port

PREFIXES = ["/api/users", "/api/products", "/api/orders"]
API_KEY = b"fuzz-key-0123456789"
ADMIN_KEY = b"fuzz-admin-key-0123456789"
PEER = "198.51.100.7"
TRUSTED = ["198.51.100.0/24", "10.0.0.0/8", "fd00::/8"]


@dataclass
class Seen:
    """What the echo backend received for one request."""

    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    app: GatewayApp
    server: Server
    seen: list[Seen] = field(default_factory=list)


async def _echo(request: web.Request, seen: list[Seen]) -> web.Response:
    body = await request.read()
    if request.raw_path == "/health":  # the gateway's background health checks
        return web.json_response({"status": "ok"})
    seen.append(Seen(request.method, request.raw_path,
                     [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers], body))
    return web.json_response({"ok": True}, headers={"cache-control": "public, max-age=30",
                                                   "x-echo": "1"})


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    yield from _harness({})


@pytest.fixture(scope="module")
def trusting_harness() -> Iterator[Harness]:
    """The peer (PEER) and 10.0.0.0/8 are configured as trusted proxies."""
    yield from _harness({"proxy": {"max_body_bytes": 1024, "trusted_proxies": TRUSTED}})


def _harness(extra: dict[str, Any]) -> Iterator[Harness]:
    import hashlib

    loop = asyncio.new_event_loop()
    seen: list[Seen] = []
    backend = web.Application()

    async def echo(request: web.Request) -> web.Response:
        return await _echo(request, seen)

    backend.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(backend, access_log=None)
    port = free_port()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    url = f"http://127.0.0.1:{port}"
    config = parse_config({
        "services": {name: {"url": url, "timeout": 5} for name in ("users", "products", "orders")},
        "routes": {"/api/users": "users", "/api/products": "products",
                   "/api/orders": {"service": "orders", "methods": ["GET", "POST", "HEAD"]}},
        "rate_limits": {"default": 1_000_000, "anonymous": 1_000_000, "premium": 1_000_000},
        "auth": {"consumers": [{"id": "fuzzer", "tier": "premium",
                                "key_sha256": hashlib.sha256(API_KEY).hexdigest()}],
                 "admin_keys_sha256": [hashlib.sha256(ADMIN_KEY).hexdigest()]},
        "proxy": {"max_body_bytes": 1024},
        "logging": {"access_log": False},
        **extra,
    })
    app = GatewayApp(config)
    loop.run_until_complete(app.start())
    try:
        yield Harness(loop, app, Server(app, limits_from(config.proxy)), seen)
    finally:
        loop.run_until_complete(app.close())
        loop.run_until_complete(runner.cleanup())
        loop.close()


# -- what a client may send ---------------------------------------------------------------
_SAFE_TOKENS = ["/a", "/7", "/users", "/x-y", "/a_b", "/~z", "/%41", "/%20", "/a;x=1", "/a+b",
                "/@", "/a:b", "/!$&'()*,=", "/.well", "/a..b", "/..."]
_TRICKS = ["/.", "/..", "/..;", "/..;x", "/%2e%2e", "/%2E.", "/.%2e", "/%2f", "/%2F..", "/%5c",
           "/%00", "/%252f", "/%252e%252e", "\\..", "/..\\", "//", "%2f..", "/%25", "/%zz", "/;"]
# Mostly plausible paths under a route, with a trick now and then (where the bugs would be).
_PREFIX_CHOICES = [*PREFIXES * 6, "/api", "/", "", "/api/usersx", "/API/users"]
paths = st.builds(lambda p, rest: p + rest, st.sampled_from(_PREFIX_CHOICES),
                  st.lists(st.sampled_from(_SAFE_TOKENS * 4 + _TRICKS), max_size=5).map("".join))
queries = st.lists(st.sampled_from(["a=1", "b", "%2f", "x=%00", "&", "=", "q=..", "c=%zz"]),
                   max_size=4).map("&".join)
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE",
                           "TRACE", "CONNECT", "FOO"])
_NAMES = ["content-type", "x-user-id", "x-user-tier", "x-api-key", "authorization", "x-forwarded-for",
          "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip", "x-request-id",
          "traceparent", "tracestate", "cache-control", "pragma", "if-none-match",
          "if-modified-since", "range", "connection", "te", "upgrade", "keep-alive", "cookie",
          "accept-encoding", "host", "x-custom", "expect", "proxy-authorization", "x_user_id",
          "transfer_encoding", "x_custom"]
_VALUE_BYTES = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
_VALUES = st.one_of(
    st.binary(max_size=60).map(lambda b: bytes(_VALUE_BYTES[x % len(_VALUE_BYTES)] for x in b)),
    st.sampled_from([b"premium", b"admin", API_KEY, b"Bearer " + API_KEY, b"Bearer nope", b"",
                     b"close, x-custom", b"no-cache", b"only-if-cached", b"max-age=0", b"*",
                     b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", b"bytes=0-1",
                     b"1.2.3.4, 5.6.7.8", b"a" * 300]),
)
headers = st.lists(st.tuples(st.sampled_from(_NAMES).map(str.encode), _VALUES), max_size=8)
bodies = st.one_of(st.just(b""), st.binary(max_size=64), st.binary(min_size=1000, max_size=1500))


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)


async def _call(harness: Harness, method: str, raw_path: str, query: str,
                hdrs: list[tuple[bytes, bytes]], body: bytes) -> Answer:
    target = raw_path + (f"?{query}" if query else "")
    head = [f"{method} {target} HTTP/1.1\r\n".encode("ascii")]
    head += [name + b": " + value + b"\r\n" for name, value in hdrs]
    data = b"".join([*head, b"\r\n", body])
    # never a hang: the whole exchange is bounded
    status, headers, payload = await asyncio.wait_for(exchange(harness.server, data, (PEER, 40000)), 15)
    return Answer(status, headers, payload)


def _inside(route: str, raw_path: str) -> bool:
    """Where a backend that decodes once and resolves dot-segments would land: under `route`."""
    decoded = unquote(raw_path).replace("\\", "/")
    resolved = posixpath.normpath(decoded.split(";")[0] if ";" in decoded else decoded)
    return resolved == route or resolved.startswith(route + "/")


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=methods, raw_path=paths, query=queries, hdrs=headers, body=bodies)
def test_any_request_gets_a_clear_answer_and_stays_inside_its_route(
        harness: Harness, method: str, raw_path: str, query: str,
        hdrs: list[tuple[bytes, bytes]], body: bytes) -> None:
    request_headers = [(b"host", b"gw.test"), *[(k, v) for k, v in hdrs if k != b"host"]]
    if body:
        request_headers.append((b"content-length", str(len(body)).encode()))
    before = len(harness.seen)
    answer = harness.loop.run_until_complete(
        _call(harness, method, raw_path, query, request_headers, body))

    # A clear answer: never a 5xx with a healthy backend (but the 504 RFC 9111 prescribes for
    # only-if-cached when nothing is stored), and every gateway error is a problem.
    only_if_cached = any(k == b"cache-control" and b"only-if-cached" in v.lower() for k, v in hdrs)
    assert answer.status < 500 or (answer.status == 504 and only_if_cached), \
        (answer.status, answer.body[:300])
    from_backend = answer.header(b"x-echo") is not None  # passed through as received
    if answer.status >= 400 and not from_backend:
        assert answer.header(b"content-type") == b"application/problem+json", (answer.status, answer.headers)
        problem = json.loads(answer.body) if method != "HEAD" else None
        assert problem is None or problem["status"] == answer.status
    if method == "HEAD":
        assert answer.body == b""

    forwarded = harness.seen[before:]
    assert len(forwarded) <= 1  # never sent twice
    event(f"status {answer.status}" + (", forwarded" if forwarded else ""))
    if not forwarded:
        return
    seen = forwarded[0]
    route = next(p for p in PREFIXES if raw_path == p or raw_path.startswith(p + "/"))
    # Forwarded unchanged, and unable to leave the route it was matched (and policed) on.
    assert seen.raw_path == raw_path + (f"?{query}" if query else "")
    assert _inside(route, raw_path), raw_path
    assert seen.method == method
    if body and method not in ("GET", "HEAD"):
        assert seen.body == body  # intact
    names = [k.lower() for k, _ in seen.headers]
    # Identity comes from the gateway, never from the client.
    assert names.count("x-user-tier") == 1 and names.count("x-user-id") <= 1
    tier = dict((k.lower(), v) for k, v in seen.headers)["x-user-tier"]
    assert tier in ("anonymous", "premium")
    if tier == "anonymous":
        assert "x-user-id" not in names
    # The peer is not a trusted proxy: its X-Forwarded-For is replaced, not extended.
    assert dict((k.lower(), v) for k, v in seen.headers)["x-forwarded-for"] == PEER
    # Only what the client sent (and the gateway's own fields): the HTTP client adds nothing.
    assert "user-agent" not in names and "accept" not in names
    for name in ("accept-encoding", "content-type"):
        assert (name in names) == any(k.decode() == name for k, _ in hdrs), name
    for hop in ("connection", "te", "upgrade", "keep-alive", "proxy-authorization"):
        assert hop not in names, (hop, seen.headers)
    # Never a name with `_` (a CGI/WSGI backend would read X_User_ID as X-User-ID).
    assert not any("_" in n for n in names), seen.headers
    # Field values the gateway has no business with arrive byte for byte (OWS around them is
    # not part of a value), unless the Connection field named them hop-by-hop.
    named = {t.strip().lower() for k, v in hdrs if k == b"connection" for t in v.split(b",")}
    for name in (b"x-custom", b"cookie", b"accept-encoding"):
        if name in named:
            continue
        sent = [v.strip(b" \t") for k, v in hdrs if k == name]
        got = [v.encode("latin-1") for k, v in seen.headers if k.lower().encode() == name]
        assert got == sent, (name, sent, got)


# -- the control plane ----------------------------------------------------------------------
_CONTROL_PATHS = ["/", "/health", "/ready", "/metrics", "/dashboard", "/admin/cache/purge",
                  "/docs", "/openapi.json", "/nope", "/admin", "/metrics/", "//metrics"]
_QUERY_PARTS = ["format=json", "format=prometheus", "format=openmetrics", "format=x", "scope=replica",
                "scope=cluster", "scope=", "scope=%00", "format", "a=b", "url=/api/users", "%zz"]
_BODIES = st.one_of(
    st.just(b""), st.binary(max_size=40),
    st.sampled_from([b"{}", b"[]", b"null", b'{"url": "/api/users/1"}', b'{"prefix": "/api"}',
                     b'{"url": 5}', b'{"prefix": "/api", "url": "/api/users"}', b'{"url": "x" }',
                     b'{"prefix": ""}', b'{"url": "http://evil.example/api/users"}', b"{", b'"x"']),
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
       path=st.sampled_from(_CONTROL_PATHS),
       query=st.lists(st.sampled_from(_QUERY_PARTS), max_size=3).map("&".join),
       hdrs=st.lists(st.tuples(st.sampled_from([b"accept", b"content-type", b"x-api-key",
                                                b"authorization"]),
                               st.sampled_from([b"application/json", b"text/plain",
                                                b"application/openmetrics-text; version=1.0.0",
                                                b"*/*", ADMIN_KEY, b"Bearer " + ADMIN_KEY, b"Bearer x", b"",
                                                b"\xff"])),
                     max_size=3),
       body=_BODIES)
def test_the_control_plane_answers_bad_input_with_a_4xx_never_a_500(
        harness: Harness, method: str, path: str, query: str,
        hdrs: list[tuple[bytes, bytes]], body: bytes) -> None:
    request_headers = [(b"host", b"gw.test"), *hdrs]
    if body:
        request_headers.append((b"content-length", str(len(body)).encode()))
    answer = harness.loop.run_until_complete(
        _call(harness, method, path, query, request_headers, body))
    event(f"{method} {path} -> {answer.status}")
    assert answer.status < 500 or (path == "/ready" and answer.status == 503), \
        (answer.status, answer.body[:300])
    if answer.status >= 400 and method != "HEAD":
        assert answer.header(b"content-type") == b"application/problem+json", (answer.status, answer.headers)


_JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=40),
                         st.sampled_from(["/api/users/1", "/api", "/", "", "/api/users?x=1",
                                          "http://gw.test/api/users", "//evil", "/api/../x"]),
                         st.lists(st.text(max_size=5), max_size=2))
_PURGE_BODIES = st.one_of(
    _BODIES,
    st.dictionaries(st.sampled_from(["url", "prefix", "x"]), _JSON_VALUES, max_size=3)
    .map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=_PURGE_BODIES,
       content_type=st.sampled_from([b"application/json", b"text/plain", b"", None]),
       credential=st.sampled_from([(b"x-api-key", ADMIN_KEY), (b"authorization", b"Bearer " + ADMIN_KEY)]))
def test_purge_with_the_admin_key_answers_any_body_with_a_clear_status(
        harness: Harness, body: bytes, content_type: bytes | None,
        credential: tuple[bytes, bytes]) -> None:
    request_headers = [(b"host", b"gw.test"), credential, (b"content-length", str(len(body)).encode())]
    if content_type is not None:
        request_headers.append((b"content-type", content_type))
    answer = harness.loop.run_until_complete(
        _call(harness, "POST", "/admin/cache/purge", "", request_headers, body))
    event(f"purge -> {answer.status}")
    assert answer.status in (200, 400, 415, 422), (answer.status, answer.body[:300])
    if answer.status != 200:
        assert answer.header(b"content-type") == b"application/problem+json"


# -- X-Forwarded-* behind trusted proxies ----------------------------------------------------
_HOPS = st.sampled_from(["203.0.113.9", "10.1.2.3", "198.51.100.20", "2001:db8::1", "fd00::5",
                         "[2001:db8::2]", "unknown", "", " ", "300.1.1.1", "1.2.3.4:80", "_hidden",
                         "10.0.0.1 ", "::ffff:203.0.113.5"])
_CHAINS = st.lists(_HOPS, max_size=4).map(", ".join)
_UNIQUE = itertools.count()


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(chains=st.lists(_CHAINS, max_size=2), proto=st.sampled_from([None, "https", "http", "wss", ""]))
def test_behind_trusted_proxies_the_chain_is_extended_and_the_client_ip_is_a_real_address(
        trusting_harness: Harness, chains: list[str], proto: str | None) -> None:
    import ipaddress

    hdrs = [(b"host", b"gw.test"), *[(b"x-forwarded-for", c.encode()) for c in chains]]
    if proto is not None:
        hdrs.append((b"x-forwarded-proto", proto.encode()))
    before = len(trusting_harness.seen)
    answer = trusting_harness.loop.run_until_complete(  # a new URL each time: never a cache hit
        _call(trusting_harness, "GET", "/api/users/7", f"n={next(_UNIQUE)}", hdrs, b""))
    assert answer.status == 200, (answer.status, answer.body[:300])
    (seen,) = trusting_harness.seen[before:]
    fields = {k.lower(): v for k, v in seen.headers}
    incoming = ", ".join(chains)
    hops = [h.strip() for h in incoming.split(",") if h.strip()]
    assert fields["x-forwarded-for"] == ", ".join([*hops, PEER])
    assert fields["x-forwarded-proto"] == (proto or "http")
    client = ipaddress.ip_address(fields["x-real-ip"])  # always a real address, never a guess
    assert client == _expected_client(hops)
    event(f"client {'peer' if str(client) == PEER else 'from chain'}")


def _expected_client(hops: list[str]) -> Any:
    """The model: walking from the right, the first hop no trusted proxy vouches for; the peer
    when that hop is not an address; the leftmost hop when every hop is trusted."""
    import ipaddress

    def parse(text: str) -> Any:
        try:
            return ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            return None

    def trusted(ip: Any) -> bool:
        return ip is not None and any(ip in ipaddress.ip_network(n) for n in TRUSTED)

    for hop in reversed(hops):
        ip = parse(hop)
        if not trusted(ip):
            return ip if ip is not None else ipaddress.ip_address(PEER)
    return (parse(hops[0]) if hops else None) or ipaddress.ip_address(PEER)
