"""/dashboard: served by the gateway, offline, and drawing live data in a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.dashboard import ASSETS, STATIC
from tests.observability import png
from tests.support.processes import GatewayProcess, MockService, free_port

RPS = (0x2F, 0x81, 0xF7)  # --rps in dashboard.css
P50 = (0x3F, 0xB9, 0x50)  # --p50
P99 = (0xD2, 0x99, 0x22)  # --p99
WINDOW = (1400, 900)


async def test_page_and_assets_are_served_by_the_gateway(gw: httpx.AsyncClient) -> None:
    page = await gw.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    for name, media_type in ASSETS.items():
        asset = await gw.get(f"/dashboard/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"] == media_type
        assert f"/dashboard/static/{name}" in page.text
    missing = await gw.get("/dashboard/static/../../config.py")
    assert missing.status_code == 404
    unknown = await gw.get("/dashboard/static/secrets.txt")
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    assert (await gw.get("/dashboard/", follow_redirects=False)).headers["location"] == "/dashboard"


def test_nothing_is_loaded_from_elsewhere() -> None:
    """Works offline: no URL with a host in the page, script or styles (no CDN, no fonts)."""
    for file in STATIC.iterdir():
        text = file.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), file.name
        assert "@import" not in text and "import(" not in text


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browse(url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run with a fresh profile; waits ten seconds of page time."""
    binary = chromium()
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="gw-chromium-") as profile:
        return subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
             "--hide-scrollbars", "--virtual-time-budget=10000", *flags, url],
            capture_output=True, text=True, timeout=90,
        )


@pytest.fixture
def live_gateway() -> Iterator[GatewayProcess]:
    """A gateway with one healthy and one dead service, under steady traffic with some 429s."""
    users = MockService("users")
    config: dict[str, Any] = {
        "services": {
            "users": {"url": users.url},
            "orders": {"url": f"http://127.0.0.1:{free_port()}", "connect_timeout": 0.5, "timeout": 1},
        },
        "routes": {"/api/users": "users", "/api/orders": "orders"},
        "logging": {"level": "WARNING"},
        "rate_limits": {"default": 100, "anonymous": [{"limit": 30, "window": 1}]},
        "circuit_breaker": {"failure_threshold": 2},
    }
    gateway = GatewayProcess(config)
    stop = threading.Event()

    def traffic() -> None:
        # Back to back: Chromium fast-forwards page time, so its polls can be only milliseconds
        # apart in real time, and every one of those intervals should see requests.
        deadline = time.monotonic() + 60  # bounded whatever happens to the test
        with httpx.Client(base_url=gateway.url, timeout=5) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    client.get("/api/users")
                except httpx.HTTPError:  # the gateway is stopping at the end of the test
                    break

    try:
        for _ in range(3):  # opens the orders breaker
            httpx.get(gateway.url + "/api/orders", timeout=5)
        for _ in range(2):
            threading.Thread(target=traffic, daemon=True).start()
        time.sleep(1.0)
        yield gateway
    finally:
        stop.set()
        gateway.stop()
        users.stop()


def count(image: png.Image, rect: tuple[int, int, int, int], colour: tuple[int, int, int]) -> int:
    x0, y0, w, h = rect
    hits = 0
    for y in range(max(0, y0), min(image.height, y0 + h)):
        for x in range(max(0, x0), min(image.width, x0 + w)):
            r, g, b = image.pixel(x, y)
            if abs(r - colour[0]) + abs(g - colour[1]) + abs(b - colour[2]) < 60:
                hits += 1
    return hits


@pytest.mark.cluster
@pytest.mark.slow
def test_charts_draw_live_data_in_headless_chromium(live_gateway: GatewayProcess, tmp_path: Path) -> None:
    if chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    url = live_gateway.admin_url + "/dashboard"

    dom = browse(url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body is not None, dom.stdout[:2000]
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', body.group(1)))
    assert int(attrs["polls"]) >= 3 and int(attrs["rendered"]) > 0, attrs
    canvases = {m[0]: dict(re.findall(r'data-([a-z]+)="([^"]*)"', m[1]))
                for m in re.findall(r'<canvas id="([^"]+)"([^>]*)>', dom.stdout)}
    assert int(canvases["c-rps"]["points"]) > 0 and int(canvases["c-latency"]["points"]) > 0, canvases
    assert re.search(r"<td>orders</td><td><span class=\"state open\">open</span>", dom.stdout)
    assert "(this)" in dom.stdout  # the per-replica table
    tiles = dict(re.findall(r'id="t-([a-z0-9]+)">([^<]*)<', dom.stdout))
    # Chromium fast-forwards page time, so two polls can be a few real milliseconds apart on a
    # busy machine: the last interval may have seen no request. Some interval must have.
    assert int(attrs.get("busy", 0)) >= 1, attrs
    assert re.fullmatch(r"\d+\.\d", tiles["rps"]), tiles
    assert tiles["p50"].endswith("ms") or (tiles["rps"] == "0.0" and tiles["p50"] == "–"), tiles

    def rect(name: str) -> tuple[int, int, int, int]:
        x, y, w, h = (int(v) for v in canvases[name]["rect"].split(","))
        return x, y, w, h

    # The lines (2 px) and the latest-value dot in the series' colours, inside each chart. The
    # screenshot is a second page load, whose fast-forwarded polls may again fall between real
    # requests and draw a flat line along the axis: up to three loads, one must draw them.
    for attempt in range(3):
        shot_path = tmp_path / f"dashboard-{attempt}.png"
        shot = browse(url, f"--screenshot={shot_path}")
        assert shot.returncode == 0 and shot_path.exists(), shot.stderr[-2000:]
        image = png.decode(shot_path.read_bytes())
        assert (image.width, image.height) == WINDOW
        rps_pixels = count(image, rect("c-rps"), RPS)
        latency_pixels = count(image, rect("c-latency"), P50) + count(image, rect("c-latency"), P99)
        if rps_pixels >= 20 and latency_pixels >= 20:
            break
    assert rps_pixels >= 20 and latency_pixels >= 20, (rps_pixels, latency_pixels)
    # ...and not just anywhere: an empty chart area has none of that colour.
    assert count(image, rect("c-cache"), RPS) == 0


async def test_the_api_docs_load_nothing_from_elsewhere(gw: httpx.AsyncClient) -> None:
    page = (await gw.get("/docs")).text
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page, re.I), page
    for asset in re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', page):
        response = await gw.get(asset)
        assert response.status_code == 200 and len(response.content) > 100, asset


@pytest.mark.slow
def test_the_api_docs_render_offline_in_headless_chromium(live_gateway: GatewayProcess) -> None:
    if chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    # Every host but the gateway's is unreachable: a CDN could not load.
    dom = browse(live_gateway.admin_url + "/docs", "--dump-dom",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'class="swagger-ui' in dom.stdout, dom.stdout[:2000]
    assert "/api/users" in dom.stdout and "pygateway" in dom.stdout  # the operations rendered
