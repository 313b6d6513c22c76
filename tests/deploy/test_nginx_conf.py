"""deploy/nginx/nginx.conf: the load balancer re-resolves `gateway` and keeps connections alive."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

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


def test_nginx_accepts_the_syntax(nginx_bin: str, tmp_path: Path) -> None:
    """`nginx -t` on a copy adapted to Debian's nginx 1.22, which predates `resolve`.

    The copy drops the `resolve` parameter and the resolver line and points the upstream at
    an address (1.22 would look `gateway` up at start-up); everything else is checked as is.
    """
    text = CONF.read_text()
    text = re.sub(r"^\s*resolver(_timeout)?\s[^;]*;", "", text, flags=re.M)
    text = re.sub(r"\bserver gateway:8000 ([^;]*)\bresolve\b", r"server 127.0.0.1:8000 \1", text)
    text = text.replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;")
    copy = tmp_path / "nginx.conf"
    copy.write_text(text)
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
