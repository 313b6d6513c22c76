"""`gateway consumers ...`: the run-time consumers, through a running gateway's admin API.

It talks to the admin listener (`--admin-url`, else the config's `admin.listen`, else the
default 127.0.0.1:9000) with an admin
key (`--admin-key`, else `$GATEWAY_ADMIN_KEY`), so it works the same on the embedded store and
on Redis, and a change made through one replica reaches all of them. `add` and `rotate` print
the new key alone on stdout (`KEY=$(gateway consumers add alice)`), once: only its SHA-256 is
stored.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

from gateway.config import ConfigError, config_path, host_port, load_config

DEFAULT_ADMIN_URL = "http://127.0.0.1:9000"  # admin.listen's default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file, for its admin.listen (default: $GATEWAY_CONFIG or ./gateway.yaml)")
    parser.add_argument("--admin-url", help="the admin listener, e.g. http://127.0.0.1:9000")
    parser.add_argument("--admin-key", help="an admin key (default: $GATEWAY_ADMIN_KEY)")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every consumer (the config file's and the run-time ones)")
    show = actions.add_parser("show", help="one consumer, as JSON")
    show.add_argument("id")
    add = actions.add_parser("add", help="create a consumer and print its new key (once)")
    add.add_argument("id")
    add.add_argument("--tier", default="default")
    add.add_argument("--limit", action="append", metavar="N/SECONDS",
                     help="a window of its own instead of its tier's, e.g. 500/60 (repeatable)")
    add.add_argument("--disabled", action="store_true", help="created disabled (its key refused)")
    update = actions.add_parser("update", help="change the tier, own limits or enabled flag")
    update.add_argument("id")
    update.add_argument("--tier")
    update.add_argument("--limit", action="append", metavar="N/SECONDS")
    update.add_argument("--tier-limits", action="store_true", help="drop its own limits: its tier's apply")
    flag = update.add_mutually_exclusive_group()
    flag.add_argument("--enable", action="store_true")
    flag.add_argument("--disable", action="store_true")
    rotate = actions.add_parser("rotate", help="a new key (printed once); the current ones expire after --grace")
    rotate.add_argument("id")
    rotate.add_argument("--grace", type=float, default=3600.0,
                        help="seconds the current keys stay valid (default 3600; 0: revoked now)")
    delete = actions.add_parser("delete", help="delete a consumer: its keys are refused everywhere")
    delete.add_argument("id")


def _windows(specs: list[str] | None) -> list[dict[str, float]] | None:
    if not specs:
        return None
    out = []
    for spec in specs:
        limit, sep, window = spec.partition("/")
        try:
            if not sep:
                raise ValueError
            out.append({"limit": int(limit), "window": float(window)})
        except ValueError:
            raise SystemExit(f"gateway consumers: --limit {spec!r}: use N/SECONDS, e.g. 500/60") from None
    return out


def _admin_url(args: argparse.Namespace) -> str:
    if args.admin_url:
        return str(args.admin_url).rstrip("/")
    if not args.config and not config_path().exists():
        return DEFAULT_ADMIN_URL  # e.g. beside `gateway dev`, which runs its built-in config
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise SystemExit(f"gateway consumers: {exc}\n(or give --admin-url)") from None
    if not config.admin.listen:
        raise SystemExit("gateway consumers: admin.listen is off in the config: give --admin-url")
    host, port = host_port(config.admin.listen)
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def run(args: argparse.Namespace) -> int:
    base = _admin_url(args)
    key = args.admin_key or os.environ.get("GATEWAY_ADMIN_KEY")
    if not key:
        print("gateway consumers: needs an admin key: --admin-key or $GATEWAY_ADMIN_KEY", file=sys.stderr)
        return 2
    method, path, body = _request(args)
    try:
        response = httpx.request(method, base + path, json=body, timeout=10,
                                 headers={"x-api-key": key})
    except httpx.HTTPError as exc:
        print(f"gateway consumers: {base}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if response.status_code >= 400:
        try:
            problem = response.json()
            detail = problem.get("detail", response.text)
            for error in problem.get("errors") or ():
                detail += f"\n  {error.get('field')}: {error.get('message')}"
        except ValueError:
            detail = response.text
        print(f"gateway consumers: {response.status_code}: {detail}", file=sys.stderr)
        return 1
    return _report(args, response)


def _request(args: argparse.Namespace) -> tuple[str, str, Any]:
    action = args.action
    if action == "list":
        return "GET", "/admin/consumers", None
    path = f"/admin/consumers/{args.id}"
    if action == "show":
        return "GET", path, None
    if action == "add":
        body: dict[str, Any] = {"id": args.id, "tier": args.tier, "enabled": not args.disabled}
        windows = _windows(args.limit)
        if windows:
            body["limits"] = windows
        return "POST", "/admin/consumers", body
    if action == "update":
        body = {}
        if args.tier:
            body["tier"] = args.tier
        if args.tier_limits:
            body["limits"] = []
        elif args.limit:
            body["limits"] = _windows(args.limit)
        if args.enable or args.disable:
            body["enabled"] = bool(args.enable)
        return "PATCH", path, body
    if action == "rotate":
        return "POST", path + "/keys", {"grace": args.grace}
    return "DELETE", path, None


def _report(args: argparse.Namespace, response: httpx.Response) -> int:
    action = args.action
    if action == "delete":
        print(f"deleted consumer {args.id}", file=sys.stderr)
        return 0
    document = response.json()
    if action == "list":
        for c in document["consumers"]:
            keys = ", ".join(k["fingerprint"] + ("" if not k.get("expires") else " (expiring)")
                             for k in c["keys"])
            state = "enabled" if c["enabled"] else "disabled"
            print(f"{c['id']}\t{c['tier']}\t{c['source']}\t{state}\tkeys: {keys}")
        return 0
    if action == "show":
        print(json.dumps(document, indent=2))
        return 0
    consumer = document["consumer"]
    if "key" in document:
        what = "created consumer" if action == "add" else "new key for"
        print(f"{what} {consumer['id']} (tier {consumer['tier']}); the key is shown once, store it now:",
              file=sys.stderr)
        print(document["key"])
    else:
        print(f"updated consumer {consumer['id']}: tier {consumer['tier']}, "
              f"{'enabled' if consumer['enabled'] else 'disabled'}", file=sys.stderr)
    return 0
