"""CacheEntry: a stored response (status, headers, body as received) and its byte format."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from gateway.context import Headers

MAGIC = b"GWC1"
_LEN = struct.Struct(">I")


class EntryFormatError(ValueError):
    """A stored blob is not a CacheEntry of this version (treated as a miss)."""


@dataclass(slots=True)
class CacheEntry:
    """A stored response. The body is kept exactly as received (Content-Encoding preserved)."""

    url: str
    status: int
    headers: Headers
    body: bytes

    def to_bytes(self) -> bytes:
        meta = json.dumps(
            {"u": self.url, "s": self.status, "h": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers]},
            separators=(",", ":"),
        ).encode()
        return MAGIC + _LEN.pack(len(meta)) + meta + self.body

    @classmethod
    def from_bytes(cls, blob: bytes) -> CacheEntry:
        if len(blob) < 8 or blob[:4] != MAGIC:
            raise EntryFormatError("not a cache entry")
        (size,) = _LEN.unpack_from(blob, 4)
        end = 8 + size
        if end > len(blob):
            raise EntryFormatError("truncated cache entry")
        try:
            meta = json.loads(blob[8:end])
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in meta["h"]]
            return cls(url=str(meta["u"]), status=int(meta["s"]), headers=headers, body=blob[end:])
        except (ValueError, KeyError, TypeError) as exc:
            raise EntryFormatError(f"bad cache entry: {exc}") from None
