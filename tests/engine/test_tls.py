"""TLS termination (gateway/tls.py) on a real `gateway run`, checked with real TLS clients
(Python's ssl, httpx): certificates made by the test's own CA, versions, ALPN, SNI, a reload of
the certificate without dropping an open connection, the HTTP -> HTTPS redirect listener, and
the config errors."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509

from tests.support.certs import Leaf, PrivateCA
from tests.support.cluster import wait_until
from tests.support.processes import ROOT, GatewayProcess, MockService, free_port

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def users() -> Iterator[MockService]:
    service = MockService("users")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return PrivateCA(tmp_path_factory.mktemp("tls"))


def _config(users: MockService, leaf: Leaf, **tls: Any) -> dict[str, Any]:
    return {
        "services": {"users": {"url": users.url}},
        "routes": {"/api/users": "users"},
        "logging": {"level": "WARNING"},
        "reload": {"watch": False},
        "proxy": {"header_timeout": 1},
        "tls": {"cert_file": leaf.cert_file, "key_file": leaf.key_file, **tls},
    }


def _client_context(ca: PrivateCA, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca.ca_file)
    context.set_alpn_protocols(["http/1.1", "h2"])
    for name, value in versions.items():
        setattr(context, name, value)
    return context


def _handshake(port: int, context: ssl.SSLContext, name: str = "127.0.0.1") -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(raw, server_hostname=name)


def _serial(tls: ssl.SSLSocket) -> int:
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _get(tls: ssl.SSLSocket, path: str = "/api/users", host: str = "127.0.0.1") -> bytes:
    tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += tls.recv(65536)
    return head + b"\r\n\r\n" + body


def test_https_is_served_with_tls_1_2_or_1_3_alpn_http_1_1_and_x_forwarded_proto(
        users: MockService, ca: PrivateCA) -> None:
    leaf = ca.issue("main", ["gateway.test", "127.0.0.1"])
    with GatewayProcess(_config(users, leaf), tls_ca=ca.ca_file) as gateway:
        assert isinstance(gateway, GatewayProcess)
        echoed = httpx.get(gateway.url + "/api/users/_mock/echo", verify=_client_context(ca), timeout=10)
        assert echoed.status_code == 200
        headers = {k.lower(): v for k, v in echoed.json()["headers"]}
        assert headers["x-forwarded-proto"] == "https"
        with _handshake(gateway.port, _client_context(ca)) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.selected_alpn_protocol() == "http/1.1"
            assert b" 200 " in _get(tls).split(b"\r\n")[0] + b" "
        with _handshake(gateway.port, _client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)) as tls:
            assert tls.version() == "TLSv1.2"
            assert tls.cipher()[0].startswith("ECDHE-")
        old = _client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_1)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        with pytest.raises(ssl.SSLError):
            _handshake(gateway.port, old)
        # Plain HTTP on the TLS port is not served.
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as plain:
            plain.sendall(b"GET /api/users HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"200 OK" not in plain.recv(4096)


def test_tls_1_3_only(users: MockService, ca: PrivateCA) -> None:
    leaf = ca.issue("only13", ["127.0.0.1"])
    with GatewayProcess(_config(users, leaf, min_version="1.3"), tls_ca=ca.ca_file) as gateway:
        with _handshake(gateway.port, _client_context(ca)) as tls:
            assert tls.version() == "TLSv1.3"
        with pytest.raises(ssl.SSLError):
            _handshake(gateway.port, _client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2))


def test_sni_picks_the_certificate_for_the_name(users: MockService, ca: PrivateCA) -> None:
    main = ca.issue("sni-main", ["gateway.test", "127.0.0.1"])
    api = ca.issue("sni-api", ["api.example.com"])
    wild = ca.issue("sni-wild", ["*.example.net"])
    named = ca.issue("sni-named", ["internal.example.org"])
    certificates = [{"cert_file": c.cert_file, "key_file": c.key_file} for c in (api, wild)]
    certificates.append({"cert_file": named.cert_file, "key_file": named.key_file,
                         "server_names": ["other.example.org"]})
    with GatewayProcess(_config(users, main, certificates=certificates), tls_ca=ca.ca_file) as gateway:
        context = _client_context(ca)
        for name, leaf in (("api.example.com", api), ("shop.example.net", wild), ("gateway.test", main)):
            with _handshake(gateway.port, context, name) as tls:
                assert _serial(tls) == leaf.serial, name
        unchecked = _client_context(ca)
        unchecked.check_hostname = False  # names the certificates themselves do not hold
        with _handshake(gateway.port, unchecked, "other.example.org") as tls:
            assert _serial(tls) == named.serial  # its server_names
        with _handshake(gateway.port, unchecked, "nobody.example.com") as tls:  # the default
            assert _serial(tls) == main.serial


def test_a_reload_serves_the_new_certificate_and_keeps_open_connections(
        users: MockService, ca: PrivateCA, tmp_path: Path) -> None:
    first = ca.issue("reload-1", ["127.0.0.1"])
    second = ca.issue("reload-2", ["127.0.0.1"])
    path = str(tmp_path / "gateway.yaml")
    with GatewayProcess(_config(users, first), tls_ca=ca.ca_file, config_path=path) as gateway:
        context = _client_context(ca)
        kept = _handshake(gateway.port, context)
        try:
            assert _serial(kept) == first.serial and b" 200 " in _get(kept)
            with open(path, "w") as f:
                yaml.safe_dump(_config(users, second), f)
            assert gateway.proc is not None
            gateway.proc.send_signal(signal.SIGHUP)

            def new_certificate() -> bool:
                with _handshake(gateway.port, context) as tls:
                    return _serial(tls) == second.serial

            wait_until(new_certificate, timeout=10, what="the new certificate")
            assert b" 200 " in _get(kept)  # the connection made before the reload still serves
        finally:
            kept.close()


def test_plain_http_is_redirected_to_https(users: MockService, ca: PrivateCA) -> None:
    leaf = ca.issue("redirect", ["127.0.0.1"])
    redirect_port = free_port()
    config = _config(users, leaf, redirect_from=f"127.0.0.1:{redirect_port}")
    with GatewayProcess(config, tls_ca=ca.ca_file) as gateway:
        r = httpx.post(f"http://127.0.0.1:{redirect_port}/api/users/7?x=1&y=%2F",
                       headers={"host": f"gateway.test:{redirect_port}"}, timeout=10)
        assert r.status_code == 308
        assert r.headers["location"] == f"https://gateway.test:{gateway.port}/api/users/7?x=1&y=%2F"
        followed = httpx.get(f"http://127.0.0.1:{redirect_port}/api/users", timeout=10,
                             follow_redirects=True, verify=_client_context(ca))
        assert followed.status_code == 200 and str(followed.url).startswith("https://127.0.0.1:")


def test_a_client_that_stalls_in_the_handshake_is_closed(users: MockService, ca: PrivateCA) -> None:
    leaf = ca.issue("stall", ["127.0.0.1"])
    with GatewayProcess(_config(users, leaf), tls_ca=ca.ca_file) as gateway:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw:
            started = time.monotonic()
            assert raw.recv(1024) == b""  # closed, nothing sent
            assert time.monotonic() - started < 5


def _check(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_CONFIG"}
    return subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(file)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_config_errors_name_the_field(users: MockService, ca: PrivateCA, tmp_path: Path) -> None:
    leaf = ca.issue("errors", ["127.0.0.1"])
    other = ca.issue("errors-other", ["127.0.0.1"])
    missing = _config(users, leaf)
    missing["tls"]["key_file"] = str(tmp_path / "nope.key")
    result = _check(missing, tmp_path)
    assert result.returncode == 1 and "tls" in result.stderr and "key_file" in result.stderr
    mismatched = _config(users, leaf)
    mismatched["tls"]["key_file"] = other.key_file
    result = _check(mismatched, tmp_path)
    assert result.returncode == 1 and "cannot be used together" in result.stderr
    bad_redirect = _config(users, leaf, redirect_from="nowhere")
    result = _check(bad_redirect, tmp_path)
    assert result.returncode == 1 and "tls.redirect_from" in result.stderr
