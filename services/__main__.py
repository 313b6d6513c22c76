"""`python -m services users|products|orders [--host H] [--port N]`: run one mock backend."""

from __future__ import annotations

import argparse
import logging
import sys

from services.app import DEFAULT_PORTS, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    parser.add_argument("name", choices=sorted(DEFAULT_PORTS), help="which service to run")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port to bind; 0 picks a free one (default: users 8001, products 8002, orders 8003)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        run(args.name, args.host, args.port, access_log=args.access_log)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
