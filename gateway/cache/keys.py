"""Redis key names of the cache, and the Vary secondary key.

Everything about one URL lives under one hash tag `{<url hash>}` (Redis Cluster: one slot):

    <p>:c:{h}              root HASH: per scope its Vary names, its variants, a pass marker
    <p>:c:{h}:<vid>        one stored variant: a HASH of numbers the Lua reads + the entry blob
    <p>:c:{h}:lock:<scope> a fill lock (SET NX PX): `s`, the URL's, common to every consumer,
                           taken by a miss (its fill may be stored shared) and by a revalidation
                           of a shared entry; a consumer's own (`u:<hash>`) to revalidate its own
                           entry, or after a shared fill stored what was not for it
    <p>:c:{h}:inv          time of the last invalidation (a fill started before it is not stored)

The cluster-wide account of what is stored (size, byte budget, and each variant's URL for prefix
purges, without SCAN), under one tag:

    <p>:c:{size}:exp / :bytes / :tot / :urls
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_COMMA = re.compile(rb"[ \t]*,[ \t]*")
ABSENT = b"\x00"  # a field absent from a request only matches its absence (§4.1)

SHARED_SCOPE = "s"


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def consumer_scope(consumer_id: str | None, authorization: bytes | None) -> str:
    """The scope of a response stored for one consumer only (never shown to another)."""
    digest = hashlib.sha256()
    digest.update((consumer_id or "").encode())
    digest.update(b"\x00")
    digest.update(authorization or b"")
    return "u:" + digest.hexdigest()[:24]


class CacheKeys:
    """Key names under the configured prefix (default `gw`)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.channel = f"{prefix}:c:fills"
        self.size_exp = f"{prefix}:c:{{size}}:exp"
        self.size_bytes = f"{prefix}:c:{{size}}:bytes"
        self.size_total = f"{prefix}:c:{{size}}:tot"
        self.size_urls = f"{prefix}:c:{{size}}:urls"

    def root(self, h: str) -> str:
        return f"{self.prefix}:c:{{{h}}}"

    def lock(self, h: str, scope: str) -> str:
        return f"{self.prefix}:c:{{{h}}}:lock:{scope}"

    def invalidated(self, h: str) -> str:
        return f"{self.prefix}:c:{{{h}}}:inv"



# Request fields the origin sees beside the URL that no response names in Vary but many origins
# use: every stored variant is keyed on them as if it did. The host the origin was told
# (X-Forwarded-Host: the client's Host, or what a trusted proxy said) is what it builds its
# absolute links from, so a request with another Host never gets an entry made for this one.
KEYED_FIELDS = ("x-forwarded-host",)


def keyed_vary(names: Iterable[str]) -> list[str]:
    """The Vary names a variant is stored under: the response's and the `KEYED_FIELDS`, sorted."""
    return sorted({*names, *KEYED_FIELDS})


# Request fields whose values are case-insensitive tokens (RFC 9110 §12.5: content codings,
# language tags, media types, charsets): `gzip` and `GZIP` select the same variant (§4.1).
CASELESS = frozenset({b"accept", b"accept-charset", b"accept-encoding", b"accept-language"})


def secondary_key(names: Iterable[str], headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The Vary secondary key (§4.1); `lua/cache_lookup.lua` computes the same bytes.

    For each nominated field (sorted, lower-case): `name=value\\n`, the value being the field's
    lines stripped, joined with "," and with whitespace around commas removed, lower-cased for
    the fields whose values are case-insensitive tokens (`CASELESS`); absent -> NUL.
    """
    pairs = list(headers)
    out = bytearray()
    for name in names:
        wanted = name.encode("latin-1")
        values = [v.strip(b" \t") for k, v in pairs if k == wanted]
        value = _COMMA.sub(b",", b",".join(values)) if values else ABSENT
        if wanted in CASELESS:
            value = value.lower()
        out += wanted + b"=" + value + b"\n"
    return bytes(out)
