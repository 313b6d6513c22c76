"""deploy/nginx/nginx.conf: the load balancer re-resolves `gateway` and keeps connections alive."""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.problem import PROBLEM_TYPE, problem_body

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "deploy" / "nginx" / "nginx.conf"


def directives(text: str) -> str:
    """The config without comments, whitespace collapsed: what nginx actually reads."""
    without_comments = re.sub(r"#[^\n]*", "", text)
    return re.sub(r"\s+", " ", without_comments)


def block(text: str, header: str) -> str:
    """Body of the first `header { ... }` block, nested braces included."""
    start = text.index(header + " {") + len(header) + 2
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    raise AssertionError(f"unclosed block {header}")


@pytest.fixture(scope="module")
def conf() -> str:
    return directives(CONF.read_text())


def test_upstream_has_a_zone_and_resolves_the_gateway_name(conf: str) -> None:
    upstream = block(conf, "upstream gateway_pool")
    # `resolve` only works in an upstream with a shared-memory zone.
    assert re.search(r"\bzone gateway_pool \d+k;", upstream)
    assert re.search(r"\bserver gateway:8000 [^;]*\bresolve\b", upstream)
    assert re.search(r"\bkeepalive \d+;", upstream)


def test_resolver_is_dockers_dns_with_a_short_ttl(conf: str) -> None:
    assert re.search(r"\bresolver 127\.0\.0\.11 [^;]*\bvalid=5s\b", conf)


def test_server_listens_on_8000_and_proxies_to_the_pool_with_keepalive(conf: str) -> None:
    server = block(conf, "server")
    assert re.search(r"\blisten 8000;", server)
    location = block(server, "location /")
    assert "proxy_pass http://gateway_pool;" in location
    assert "proxy_http_version 1.1;" in location
    assert 'proxy_set_header Connection "";' in location


@pytest.mark.parametrize(
    "header, value",
    [
        ("X-Forwarded-For", "$proxy_add_x_forwarded_for"),
        ("X-Forwarded-Proto", "$scheme"),
        ("X-Forwarded-Host", "$host"),
        ("Host", "$host"),
    ],
)
def test_forwarding_headers(conf: str, header: str, value: str) -> None:
    assert f"proxy_set_header {header} {value};" in block(conf, "location /")


def debian_copy(tmp_path: Path, upstream: str = "127.0.0.1:8000") -> str:
    """The config adapted to Debian's nginx 1.22, which predates `resolve`.

    The copy drops the `resolve` parameter and the resolver line and points the upstream at
    an address (1.22 would look `gateway` up at start-up); everything else is kept as is.
    """
    text = CONF.read_text()
    text = re.sub(r"^\s*resolver(_timeout)?\s[^;]*;", "", text, flags=re.M)
    text = re.sub(r"\bserver gateway:8000 ([^;]*)\bresolve\b", rf"server {upstream} \1", text)
    return text.replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;")


def test_nginx_accepts_the_syntax(nginx_bin: str, tmp_path: Path) -> None:
    """`nginx -t` on the Debian copy: everything but `resolve` is checked as is."""
    copy = tmp_path / "nginx.conf"
    copy.write_text(debian_copy(tmp_path))
    result = subprocess.run(
        [nginx_bin, "-t", "-q", "-p", str(tmp_path), "-e", "stderr", "-c", str(copy)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_nginx_syntax_check_catches_a_typo(nginx_bin: str, tmp_path: Path) -> None:
    copy = tmp_path / "nginx.conf"
    copy.write_text("events {}\nhttp { server { listen 8000; proxy_pas http://x; } }\n")
    result = subprocess.run(
        [nginx_bin, "-t", "-q", "-p", str(tmp_path), "-e", "stderr", "-c", str(copy)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0


# --- Body limit and nginx's own errors (issue #12) ------------------------------------------

GATEWAY_CONFIG = REPO / "deploy" / "compose" / "gateway.yaml"
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def max_body_bytes() -> int:
    """The request body limit the compose replicas run with (0: unlimited)."""
    return load_config(GATEWAY_CONFIG, environ={}).proxy.max_body_bytes


def problem_pages(conf: str) -> dict[int, dict[str, Any]]:
    """status nginx generates -> the JSON document its error_page answers with."""
    server = block(conf, "server")
    pages: dict[int, dict[str, Any]] = {}
    for codes, target in re.findall(r"\berror_page ((?:\d{3} )+)= ?(/[\w/]+);", server):
        location = block(server, f"location = {target}")
        # Not reachable from outside; a URI, since a named location fails on an unparsed line.
        assert re.match(r" ?internal;", location), target
        assert "default_type application/problem+json;" in location, target
        match = re.search(r"\breturn (\d{3}) '([^']*)';", location)
        assert match, f"{target} does not return a body"
        doc = json.loads(match.group(2))
        assert doc["status"] == int(match.group(1)), target
        for code in codes.split():
            pages[int(code)] = doc
    return pages


def test_client_max_body_size_is_the_gateways_body_limit(conf: str) -> None:
    sizes = re.findall(r"\bclient_max_body_size (\d+)([kKmMgG]?);", conf)
    # One value, in `http`: no location raises or lowers it behind the gateway's back.
    assert len(sizes) == 1 == conf.count("client_max_body_size")
    number, unit = sizes[0]
    assert int(number) * UNITS[unit.lower()] == max_body_bytes()


def test_nginx_errors_are_problem_documents_shaped_like_the_gateways(conf: str) -> None:
    pages = problem_pages(conf)
    assert {400, 404, 413, 414, 494, 500, 502, 503, 504} <= set(pages)
    for code, doc in pages.items():
        status = doc["status"]
        assert status == (431 if code == 494 else code)
        assert set(doc) == {"type", "title", "status", "detail"}
        # The gateway's own convention for a problem with no specific kind.
        assert json.loads(problem_body(status, doc["detail"])) == doc
        assert doc["type"] == PROBLEM_TYPE + doc["title"].lower().replace(" ", "-")


def test_the_413_is_the_one_the_gateway_sends(conf: str) -> None:
    limit = max_body_bytes()
    assert problem_pages(conf)[413] == json.loads(
        problem_body(413, f"request body exceeds {limit} bytes")
    )


def test_the_gateways_own_errors_are_not_intercepted(conf: str) -> None:
    # error_page applies to upstream responses only with proxy_intercept_errors on.
    assert "proxy_intercept_errors" not in conf


# --- The real nginx on loopback --------------------------------------------------------------


class Upstream:
    """A stand-in gateway replica on 127.0.0.1 answering like the gateway does."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                upstream.seen.append(self.path)
                match = re.fullmatch(r"/status/(\d{3})", self.path)
                status = int(match.group(1)) if match else 200
                kinds = {502: "upstream-connect", 504: "upstream-timeout", 503: "circuit-open"}
                body = problem_body(
                    status, "from the gateway", request_id="r1", kind=kinds.get(status)
                )
                self.send_response(status)
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def run_nginx(nginx_bin: str, tmp_path: Path) -> Iterator[Callable[[int], int]]:
    """Start the Debian copy on an ephemeral 127.0.0.1 port, upstream at 127.0.0.1:PORT."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(upstream_port: int) -> int:
        port = free_port()
        text = debian_copy(tmp_path, f"127.0.0.1:{upstream_port}")
        text = re.sub(r"\blisten 8000;", f"listen 127.0.0.1:{port};", text)
        text = text.replace("access_log /dev/stdout", f"access_log {tmp_path}/access.log")
        text = text.replace("error_log /dev/stderr", f"error_log {tmp_path}/error.log")
        copy = tmp_path / "nginx.conf"
        copy.write_text(text)
        log = (tmp_path / "stderr.log").open("wb")
        proc = subprocess.Popen(
            [nginx_bin, "-p", str(tmp_path), "-e", "stderr", "-c", str(copy), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        procs.append(proc)
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return port
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.05)

    yield start
    for proc in procs:  # stopped by PID: the master takes its workers down with it
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    stub = Upstream()
    yield stub
    stub.close()


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is and read one response (nginx closes or says how long it is)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before a response head: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *fields = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
        length = int(headers["content-length"])
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-body"
            body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def assert_problem(headers: dict[str, str], body: bytes, status: int) -> dict[str, Any]:
    assert headers["content-type"] == "application/problem+json"
    doc = json.loads(body)
    assert doc["status"] == status
    assert doc["type"].startswith(PROBLEM_TYPE)
    assert {"type", "title", "status", "detail"} <= set(doc)
    return doc


def test_a_body_over_the_limit_gets_the_gateways_413_from_nginx(
    run_nginx: Callable[[int], int], upstream: Upstream
) -> None:
    port = run_nginx(upstream.port)
    limit = max_body_bytes()
    # The head alone: nginx refuses on Content-Length, before reading (or buffering) a byte.
    request = (
        f"POST /api/orders HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {limit + 1}\r\n\r\n"
    ).encode()
    status, headers, body = raw_exchange(port, request)
    assert status == 413
    doc = assert_problem(headers, body, 413)
    assert doc == json.loads(problem_body(413, f"request body exceeds {limit} bytes"))
    assert upstream.seen == []
    # A body within the limit is forwarded.
    small = b'{"item": 1}'
    request = (
        f"POST /api/orders HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(small)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + small
    assert raw_exchange(port, request)[0] == 200
    assert upstream.seen == ["/api/orders"]


REFUSED_BY_NGINX = {
    "URI over the buffer": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "garbled request line": (b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "bad method": (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "the error pages themselves": (b"GET /_lb/problem/413 HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    "header over the buffer": (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
        431,
    ),
    "no Host in HTTP/1.1": (b"GET / HTTP/1.1\r\n\r\n", 400),
}


@pytest.mark.parametrize(
    "request_bytes, status", REFUSED_BY_NGINX.values(), ids=REFUSED_BY_NGINX.keys()
)
def test_requests_nginx_refuses_get_problem_documents(
    run_nginx: Callable[[int], int], upstream: Upstream, request_bytes: bytes, status: int
) -> None:
    port = run_nginx(upstream.port)
    got, headers, body = raw_exchange(port, request_bytes)
    assert got == status
    assert_problem(headers, body, status)
    assert upstream.seen == []


def test_no_replica_answering_is_a_502_problem(run_nginx: Callable[[int], int]) -> None:
    port = run_nginx(free_port())  # nothing listens there: every connect is refused
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/api/users")
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 502
    doc = assert_problem({"content-type": response.getheader("Content-Type", "")}, body, 502)
    assert doc["type"] == PROBLEM_TYPE + "bad-gateway"


@pytest.mark.parametrize("status", [413, 502, 503, 504])
def test_the_gateways_own_problems_pass_through_unchanged(
    run_nginx: Callable[[int], int], upstream: Upstream, status: int
) -> None:
    port = run_nginx(upstream.port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", f"/status/{status}")
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == status
    assert response.getheader("Content-Type") == "application/problem+json"
    # Byte for byte what the replica sent: its request_id and specific type survive.
    kinds = {502: "upstream-connect", 504: "upstream-timeout", 503: "circuit-open"}
    assert body == problem_body(status, "from the gateway", request_id="r1", kind=kinds.get(status))
