"""No cache poisoning: nothing a client sends that is not in the cache key shapes a shared entry.

End to end through an in-process gateway (cache on, the embedded store) in front of an origin
that, like many real ones, builds its answer from what it is told beside the URL: the host it
is reached as, a path prefix, a port or scheme, a rewritten URL, an overridden method, a cookie.
An attacker's request with any of those must never leave an entry that another client (who
sends none of them) is then served.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cache.site import PUBLIC, REFLECTED, Site, fresh


def test_another_host_never_gets_the_entry_made_for_this_one(site: Site) -> None:
    path = fresh("public")
    evil = site.send("GET", path, {"host": "evil.example"})
    assert evil.status_code == 200 and json.loads(evil.text)["seen"]["x-forwarded-host"] == "evil.example"
    mine = site.send("GET", path)
    assert json.loads(mine.text)["seen"]["x-forwarded-host"] == PUBLIC
    assert mine.headers["x-cache"] == "MISS"
    again = site.send("GET", path)
    assert again.headers["x-cache"] == "HIT" and again.text == mine.text
    assert site.send("GET", path, {"host": "evil.example"}).text == evil.text  # its own entry


def test_a_syntactically_invalid_host_is_refused(site: Site) -> None:
    response = site.send("GET", fresh(), {"host": "bad host"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("name", ["x-forwarded-prefix", "x-forwarded-port", "x-forwarded-scheme",
                                  "x-original-url", "x-rewrite-url", "x-http-method-override",
                                  "x-method-override", "x-http-method"])
def test_rewrite_and_override_fields_never_reach_the_origin(site: Site, name: str) -> None:
    path = fresh()
    seen = json.loads(site.send("GET", path, {name: "/admin" if "url" in name else "DELETE"}).text)["seen"]
    assert seen[name] is None


def test_a_method_override_cannot_get_past_a_routes_methods(site: Site) -> None:
    response = site.send("POST", fresh(), {"x-http-method-override": "DELETE"}, content=b"{}")
    assert response.status_code == 200
    assert json.loads(response.text)["method"] == "POST"  # and the override was not forwarded
    assert site.send("DELETE", fresh()).status_code == 405


def test_a_get_with_a_body_is_neither_served_from_nor_stored_in_the_cache(site: Site) -> None:
    path = fresh("public")
    with_body = site.send("GET", path, content=b"payload")
    assert with_body.headers["x-cache"] == "BYPASS" and json.loads(with_body.text)["body"] == "payload"
    plain = site.send("GET", path)
    assert plain.headers["x-cache"] == "MISS" and json.loads(plain.text)["body"] == ""
    assert site.send("GET", path, content=b"other").headers["x-cache"] == "BYPASS"


def test_a_request_with_a_cookie_never_leaves_a_shared_entry_without_an_explicit_public(site: Site) -> None:
    path = fresh()  # no Cache-Control: only the gateway's default freshness
    with_cookie = site.send("GET", path, {"cookie": "session=attacker"})
    assert json.loads(with_cookie.text)["seen"]["cookie"] == "session=attacker"
    anonymous = site.send("GET", path)
    assert anonymous.headers["x-cache"] == "MISS"
    assert json.loads(anonymous.text)["seen"]["cookie"] is None
    # the cookie's own entry is its own: the same cookie is served it, another is not
    assert site.send("GET", path, {"cookie": "session=attacker"}).headers["x-cache"] == "HIT"
    assert site.send("GET", path, {"cookie": "session=other"}).headers["x-cache"] == "MISS"


def test_an_explicitly_public_response_to_a_cookie_request_is_shared(site: Site) -> None:
    path = fresh("public")
    site.send("GET", path, {"cookie": "session=a"})
    assert site.send("GET", path).headers["x-cache"] == "HIT"


_VALUES = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=24)
_UNKEYED = st.dictionaries(
    st.sampled_from(["host", "x-forwarded-host", "x-forwarded-prefix", "x-forwarded-port",
                     "x-forwarded-scheme", "x-forwarded-server", "x-original-url", "x-rewrite-url",
                     "x-original-uri", "x-http-method-override", "x-method-override", "x-http-method",
                     "cookie", "x-forwarded-proto", "forwarded"]),
    _VALUES, min_size=1, max_size=5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attack=_UNKEYED, public=st.booleans())
def test_random_unkeyed_fields_never_change_what_another_client_gets_from_the_cache(
        site: Site, attack: dict[str, str], public: bool) -> None:
    path = fresh("public" if public else "")
    poisoned = site.send("GET", path, attack)
    assert poisoned.status_code in (200, 400)  # 400: a Host that is not a host
    victim = site.send("GET", path)
    clean = json.loads(victim.text)
    assert clean["seen"]["x-forwarded-host"] == PUBLIC
    # A response the origin marked `public` may be shared although it answered a request with a
    # cookie (it said so explicitly: RFC 9111 3.5); everything else is the victim's own.
    exempt = {"host", "x-forwarded-host", "x-forwarded-proto", *(("cookie",) if public else ())}
    assert all(clean["seen"][name] is None for name in REFLECTED if name not in exempt)
    assert clean["seen"]["x-forwarded-proto"] == "http"
