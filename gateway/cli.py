"""The `gateway` command: dev, run, reload, consumers, cluster, check-config, smoke."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from gateway.config import ConfigError, GatewayConfig, config_path, load_config

DEV_CONFIG = Path(__file__).with_name("dev.yaml")
DEV_SERVICES = ("users", "products", "orders")  # on --services-port and the next two


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="pygateway: an API gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the gateway on :8000 with the three mock services on the embedded store")
    dev.add_argument("--config", help="config file (default: the built-in dev config with demo keys)")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--admin", metavar="HOST:PORT", help="the admin listener (default 127.0.0.1:9000; `off` for none)")
    dev.add_argument("--services-port", type=int, default=8001,
                     help="first mock service port: users, products, orders take it and the next two")

    run = sub.add_parser("run", help="run the gateway alone")
    run.add_argument("--config", help="config file (default: $GATEWAY_CONFIG or ./gateway.yaml)")
    run.add_argument("--host", default="0.0.0.0")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--workers", type=int, default=1)
    run.add_argument("--admin", metavar="HOST:PORT", help="the admin listener (default: admin.listen, "
                     "127.0.0.1:9000; `off` for none)")
    run.add_argument("--grace", type=float, default=30.0,
                     help="seconds to drain in-flight requests on SIGTERM (default 30)")

    reload = sub.add_parser("reload", help="reload the config of the running gateways that serve it "
                            "(validated here first; every worker, no request dropped)")
    reload.add_argument("--config", help="config file (default: $GATEWAY_CONFIG or ./gateway.yaml)")

    consumers = sub.add_parser("consumers", help="manage run-time consumers through a running "
                               "gateway's admin API (reach every replica within a second)")
    from gateway import consumers_cli

    consumers_cli.add_arguments(consumers)

    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", nargs="?", help="config file (default: $GATEWAY_CONFIG or ./gateway.yaml)")

    cluster = sub.add_parser("cluster", help="run Redis, the mock services and N gateways behind "
                             "a round-robin front on loopback (no Docker)")
    from gateway import localcluster

    localcluster.add_arguments(cluster)

    smoke = sub.add_parser("smoke", help="run the README's examples against a live gateway")
    smoke.add_argument("url", nargs="?", default="http://localhost:8000")

    args = parser.parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "run":
        return _run(args)
    if args.command == "reload":
        return _reload(args.config)
    if args.command == "consumers":
        return consumers_cli.run(args)
    if args.command == "dev":
        return _dev(args)
    if args.command == "cluster":
        return localcluster.run(args)
    if args.command == "smoke":
        from gateway.smoke import run_smoke

        return run_smoke(args.url)
    return 2


def _load(path: str | None) -> GatewayConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return None


def _check_config(path: str | None) -> int:
    config = _load(path)
    if config is None:
        return 1
    store = config.redis.url or "embedded store"
    print(f"{config_path(path)}: OK ({len(config.services)} services, {len(config.routes)} routes, {store})")
    return 0


def _reload(path: str | None) -> int:
    """Validate the file (as `nginx -t` before `-s reload`), then SIGHUP each process serving it."""
    from gateway import pidfiles

    if _load(path) is None:
        print("gateway: not reloading: the running configuration keeps serving", file=sys.stderr)
        return 1
    file = config_path(path).resolve()
    pids = pidfiles.serving(file)
    if not pids:
        print(f"gateway: no running gateway serves {file}", file=sys.stderr)
        return 1
    signalled = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGHUP)
            signalled.append(pid)
        except ProcessLookupError:
            continue
        except PermissionError:
            print(f"gateway: not allowed to signal pid {pid}", file=sys.stderr)
    if not signalled:
        return 1
    print(f"{file}: reload signalled to pid {', '.join(map(str, signalled))} "
          "(the outcome is in their logs and in /metrics: config)")
    return 0


def _serve(config_file: str, host: str, port: int, workers: int = 1, grace: float = 30.0,
           text_logs: bool = False) -> int:
    from gateway.serve import run

    os.environ["GATEWAY_CONFIG"] = str(Path(config_file).resolve())  # workers read it too
    if text_logs:
        os.environ["GATEWAY_LOGGING__FORMAT"] = "text"
    return run(os.environ["GATEWAY_CONFIG"], host, port, workers, grace)


def _admin_override(args: argparse.Namespace) -> None:
    if getattr(args, "admin", None):
        os.environ["GATEWAY_ADMIN__LISTEN"] = '""' if args.admin == "off" else args.admin  # workers too


def _admin_busy(config: GatewayConfig) -> str | None:
    if not config.admin.listen:
        return None
    from gateway.config import host_port

    host, port = host_port(config.admin.listen)
    return None if port == 0 or port_free(host, port) else config.admin.listen


def _run(args: argparse.Namespace) -> int:
    _admin_override(args)
    config = _load(args.config)
    if config is None:
        return 1
    busy = _admin_busy(config)
    if busy:
        print(f"gateway: admin.listen: {busy} is in use (another gateway? --admin HOST:PORT or "
              "--admin off)", file=sys.stderr)
        return 1
    if args.workers < 1:
        print("gateway: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and not config.redis.url:
        print("gateway: the embedded store is single-process only: set redis.url "
              "(or GATEWAY_REDIS__URL) to run several workers", file=sys.stderr)
        return 1
    return _serve(str(config_path(args.config)), args.host, args.port, args.workers, args.grace)


def port_free(host: str, port: int) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the listeners will
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _dev(args: argparse.Namespace) -> int:
    _admin_override(args)
    config_file = args.config or str(DEV_CONFIG)
    config = _load(config_file)
    if config is None:
        return 1
    from gateway.localcluster import wait_answering

    ports = {name: args.services_port + i for i, name in enumerate(DEV_SERVICES)}
    # Every port free before anything starts (or says it started): a busy one is named at once,
    # and a mock's port answered by something else is never mistaken for the mock.
    busy = [f"{host}:{port} ({what})" for what, host, port in
            [("gateway", args.host, args.port), *(("mock " + n, "127.0.0.1", p) for n, p in ports.items())]
            if not port_free(host, port)]
    admin = _admin_busy(config)
    if admin:
        busy.append(f"{admin} (admin listener)")
    if busy:
        print(f"gateway dev: port in use: {', '.join(busy)}; choose others with --port / "
              "--services-port / --admin", file=sys.stderr)
        return 1
    if not args.config:
        for name, port in ports.items():  # keep the built-in config pointing at them
            os.environ[f"GATEWAY_SERVICES__{name.upper()}__URL"] = f"http://127.0.0.1:{port}"
    children: list[subprocess.Popen[bytes]] = []
    try:
        for name, port in ports.items():
            children.append(subprocess.Popen(
                [sys.executable, "-m", "services", name, "--host", "127.0.0.1", "--port", str(port)]))
        for name, port in ports.items():
            if not wait_answering(f"http://127.0.0.1:{port}/health", children):
                print(f"gateway dev: mock service {name} did not start on :{port} "
                      "(is the port in use?)", file=sys.stderr)
                return 1
        first, last = min(ports.values()), max(ports.values())
        admin_note = f", admin (dashboard, docs) on http://{config.admin.listen}" if config.admin.listen else ""
        print(f"gateway dev: mock services on :{first}-:{last}, gateway on http://{args.host}:{args.port}"
              f"{admin_note} (embedded store; Ctrl-C stops everything)", file=sys.stderr)
        return _serve(config_file, args.host, args.port, text_logs=True)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    sys.exit(main())
