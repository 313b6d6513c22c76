"""Header field names and values written in a plugin's settings, checked as the wire checks them."""

from __future__ import annotations

from gateway.engine.wire import HOP_BY_HOP, valid_field_name, valid_field_value

# Framing, routing and identity: a plugin changing these would break the message or forge an identity.
PROTECTED = frozenset({n.decode() for n in HOP_BY_HOP} | {
    "host", "content-length", "expect", "x-user-id", "x-user-tier", "x-forwarded-for",
    "x-forwarded-proto", "x-forwarded-host", "x-request-id", "date", "server",
})


def is_field_name(text: str) -> bool:
    """An RFC 9110 token: a field name, or a method."""
    return text.isascii() and valid_field_name(text.encode())


def is_field_value(text: str) -> bool:
    """Latin-1 text without control characters (HTAB allowed), sent as its bytes."""
    try:
        return valid_field_value(text.encode("latin-1"))
    except UnicodeEncodeError:
        return False
