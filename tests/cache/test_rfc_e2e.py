"""The cache's RFC 9111 / 9213 rules end to end: a real gateway, a programmable origin
(tests/cache/site.py), what a client sees."""

from __future__ import annotations

import json
import time
import uuid
from email.utils import formatdate
from urllib.parse import urlencode

import pytest

from tests.cache.site import Site


def page(*fields: str, prefix: str = "/api/pages", **params: str) -> str:
    """A fresh path whose origin answers with `fields` ("Name: value") and `params`."""
    query = urlencode([*(("h", f) for f in fields), *params.items()])
    return f"{prefix}/{uuid.uuid4().hex}?{query}"


def statuses(site: Site, path: str, n: int = 2, **headers: str) -> list[str]:
    return [site.send("GET", path, headers or None).headers["x-cache"] for _ in range(n)]


@pytest.mark.parametrize("expires", ["Sun, 06 Nov 2094 08:49:37 UTC", "Sun 06 Nov 2094 08:49:37 GMT",
                                     "Sun, 06 Nov 94 08:49:37 GMT", "Sun, 06 Nov 2094 8:49:37 GMT"])
def test_an_expires_that_is_not_an_http_date_is_already_expired(site: Site, expires: str) -> None:
    assert statuses(site, page(f"Expires: {expires}")) == ["MISS", "MISS"]


def test_a_valid_expires_in_the_future_is_fresh(site: Site) -> None:
    later = formatdate(time.time() + 600, usegmt=True)
    assert statuses(site, page(f"Expires: {later}")) == ["MISS", "HIT"]


def test_an_age_list_counts_its_first_member(site: Site) -> None:
    # max-age 3600 and Age 7200 (the first member): already stale on arrival, never fresh
    assert statuses(site, page("Cache-Control: max-age=3600", "Age: 7200, 0")) == ["MISS", "MISS"]
    assert statuses(site, page("Cache-Control: max-age=3600", "Age: 0, 7200")) == ["MISS", "HIT"]


def test_a_method_of_unknown_safety_invalidates(site: Site) -> None:
    path = page("Cache-Control: max-age=60", prefix="/api/any")
    assert statuses(site, path) == ["MISS", "HIT"]
    assert site.send("M-SEARCH", path).status_code == 200
    assert statuses(site, path, 1) == ["MISS"]
    site.send("OPTIONS", path)  # safe: nothing changes
    assert statuses(site, path, 1) == ["HIT"]


def test_cdn_cache_control_decides_and_goes_no_further(site: Site) -> None:
    path = page("Cache-Control: no-store", "CDN-Cache-Control: max-age=60")
    first, second = site.send("GET", path), site.send("GET", path)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert "cdn-cache-control" not in first.headers and "cdn-cache-control" not in second.headers
    assert second.headers["cache-control"] == "no-store"  # for the client, as the origin wrote it
    assert statuses(site, page("Cache-Control: max-age=60", "CDN-Cache-Control: private")) == ["MISS", "MISS"]


def test_the_targeted_field_of_our_own_name_comes_first(site: Site) -> None:
    path = page("CDN-Cache-Control: no-store", "Gateway-Cache-Control: max-age=60")
    assert statuses(site, path) == ["MISS", "HIT"]
    assert "gateway-cache-control" not in site.send("GET", path).headers


def test_an_error_with_explicit_freshness_is_stored_one_without_is_not(site: Site) -> None:
    maintenance = page("Cache-Control: max-age=60", status="503")
    responses = [site.send("GET", maintenance) for _ in range(2)]
    assert [r.status_code for r in responses] == [503, 503]
    assert [r.headers["x-cache"] for r in responses] == ["MISS", "HIT"]
    assert statuses(site, page(status="503")) == ["MISS", "MISS"]
    assert statuses(site, page("Cache-Control: max-age=60", status="201")) == ["MISS", "HIT"]
    assert statuses(site, page(status="201")) == ["MISS", "MISS"]  # not heuristically cacheable


def test_the_last_modified_heuristic(site: Site) -> None:
    # cache.heuristic {fraction: 0.1, max: 3600} in the site's config: modified ten days ago ->
    # fresh for min(1 day, 3600 s); the fixed ttl would give 300 s
    modified = formatdate(time.time() - 10 * 86400, usegmt=True)
    path = page(f"Last-Modified: {modified}")
    assert statuses(site, path, 1) == ["MISS"]
    assert statuses(site, path, 1, **{"cache-control": "min-fresh=3000"}) == ["HIT"]
    assert statuses(site, path, 1, **{"cache-control": "min-fresh=3700"}) == ["MISS"]


def test_vary_compares_normalised_values(site: Site) -> None:
    path = page("Cache-Control: max-age=60", "Vary: Accept-Encoding")
    first = site.send("GET", path, {"accept-encoding": "gzip, br"})
    assert first.headers["x-cache"] == "MISS"
    for same in ("GZIP,BR", "gzip ,  br"):
        again = site.send("GET", path, {"accept-encoding": same})
        assert again.headers["x-cache"] == "HIT" and json.loads(again.text)["hits"] == 1
    assert site.send("GET", path, {"accept-encoding": "br"}).headers["x-cache"] == "MISS"
