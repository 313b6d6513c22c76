"""Field rules of the three resources, and the validation that applies them.

A `ResourceSchema` turns a decoded JSON body into clean fields or raises `ValidationFailed`
listing every bad field at once, so a client fixes its request in one round trip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from services.data import Record, product_prices

# A check returns an error message, or None when the value is fine.
Check = Callable[[Any], str | None]


class FieldError(NamedTuple):
    """One invalid field and why, as shown in the problem body's `errors` list."""

    field: str
    message: str


class ValidationFailed(Exception):
    """The body broke one or more field rules."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(", ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class Field:
    """A writable field: its check, and the default a full replace (PUT) uses when absent."""

    name: str
    check: Check
    required: bool = True
    default: Any = None


@dataclass(frozen=True)
class ResourceSchema:
    """Writable fields, server-owned fields (accepted but ignored on input) and derived values."""

    fields: tuple[Field, ...]
    server_owned: frozenset[str] = frozenset({"id", "created_at"})
    derive: Callable[[Record], None] = field(default=lambda record: None)

    def validate(self, body: object, *, partial: bool) -> Record:
        """Clean fields of `body`; `partial` (PATCH) skips missing fields instead of defaulting."""
        if not isinstance(body, dict):
            raise ValidationFailed([FieldError("body", "must be a JSON object")])
        known = {f.name for f in self.fields} | self.server_owned
        errors = [FieldError(str(key), "unknown field") for key in body if key not in known]
        clean: Record = {}
        for f in self.fields:
            if f.name in body:
                message = f.check(body[f.name])
                if message is None:
                    clean[f.name] = body[f.name]
                else:
                    errors.append(FieldError(f.name, message))
            elif not partial:
                if f.required:
                    errors.append(FieldError(f.name, "is required"))
                else:
                    clean[f.name] = f.default
        if errors:
            raise ValidationFailed(errors)
        return clean


def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python, but `true` is not a quantity.
    return isinstance(value, int) and not isinstance(value, bool)


def text(max_length: int, *, allow_empty: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return "must be a string"
        if not allow_empty and not value.strip():
            return "must not be empty"
        if len(value) > max_length:
            return f"must be at most {max_length} characters"
        return None

    return check


def email(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 254:
        return "must be an email address"
    local, at, domain = value.partition("@")
    if not at or not local or "." not in domain or " " in value:
        return "must be an email address"
    return None


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of: {', '.join(choices)}"

    return check


def non_negative_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    if not math.isfinite(value) or value < 0:
        return "must be a non-negative number"
    return None


def non_negative_int(value: Any) -> str | None:
    return None if _is_int(value) and value >= 0 else "must be a non-negative integer"


def positive_int(value: Any) -> str | None:
    return None if _is_int(value) and 0 < value <= 1_000_000 else "must be a positive integer"


def known_product(prices: Mapping[int, float]) -> Check:
    def check(value: Any) -> str | None:
        if not _is_int(value) or value <= 0:
            return "must be a positive integer"
        return None if value in prices else f"product {value} does not exist"

    return check


TIERS = ("free", "pro", "enterprise")
ORDER_STATUSES = ("pending", "paid", "shipped", "delivered", "cancelled")


def schema_for(name: str) -> ResourceSchema:
    """The schema of service `name` (users, products or orders)."""
    if name == "users":
        return ResourceSchema(
            fields=(
                Field("name", text(200)),
                Field("email", email),
                Field("tier", one_of(*TIERS), required=False, default="free"),
            )
        )
    if name == "products":
        return ResourceSchema(
            fields=(
                Field("name", text(200)),
                Field("description", text(2000, allow_empty=True), required=False, default=""),
                Field("price", non_negative_number),
                Field("category", text(100)),
                Field("stock", non_negative_int, required=False, default=0),
            )
        )
    if name == "orders":
        prices = product_prices()

        def total(record: Record) -> None:
            record["total"] = round(prices[record["product_id"]] * record["quantity"], 2)

        return ResourceSchema(
            fields=(
                Field("product_id", known_product(prices)),
                Field("quantity", positive_int),
                Field("status", one_of(*ORDER_STATUSES), required=False, default="pending"),
            ),
            server_owned=frozenset({"id", "created_at", "user_id", "total"}),
            derive=total,
        )
    raise ValueError(f"unknown service {name!r}: expected users, products or orders")
