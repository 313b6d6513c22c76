"""Running the gateway: one process on a port, or a supervisor of N worker processes on one port.

One process: bind the port (so a busy port fails before anything starts), start the gateway
(store, policies, pools), then accept connections on uvloop. SIGTERM or SIGINT starts the drain:
stop accepting, close idle connections, let in-flight requests finish for up to `grace`
seconds, close the gateway, exit 0.

`--workers N`: N such processes, each with its own socket on the same port (SO_REUSEPORT: the
kernel spreads new connections over them), supervised: a worker that dies is started again
(with a growing pause if it keeps dying at once), and SIGTERM drains every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import Any

from gateway import pidfiles
from gateway.config import ConfigError, ProxySettings, config_path, host_port, load_config
from gateway.engine.server import Limits, Server
from gateway.tls import TlsTerminator, redirect_handler

log = logging.getLogger("gateway")


def limits_from(proxy: ProxySettings) -> Limits:
    return Limits(
        max_url_bytes=proxy.max_url_bytes, max_header_bytes=proxy.max_header_bytes,
        max_headers=proxy.max_headers, header_timeout=proxy.header_timeout,
        idle_timeout=proxy.idle_timeout, body_timeout=proxy.body_timeout,
        send_timeout=proxy.send_timeout, max_pipelined=proxy.max_pipelined,
        max_connections=proxy.max_connections,
        max_connections_per_client=proxy.max_connections_per_client,
        request_timeout=proxy.request_timeout,
    )


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path.

    A proxied request makes no reference cycles (checked with DEBUG_SAVEALL), but the default
    thresholds still ran a young-generation collection every ~36 requests and a full one every
    few thousand, scanning the ~85,000 objects of the loaded application: ~8-10 µs per request
    measured in-process. Everything alive after start-up is frozen (never scanned again), and a
    young collection waits for 10,000 net allocations.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking TCP socket (not yet listening)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_process(config_file: str | None, host: str, port: int, grace: float, *,
                        reuse_port: bool = False, worker: bool = False) -> int:
    """Serve until SIGTERM/SIGINT, then drain; the process's exit code. SIGHUP reloads the
    config (gateway/reload.py); a worker is found through its supervisor, which forwards it."""
    from gateway.entry import create_app
    from gateway.reload import Reloader

    # Until the reloader is ready a SIGHUP must not kill the process (its default action);
    # the file is read below anyway, and the watcher sees later changes.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    try:
        config = load_config(config_file)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    app = create_app(config)
    try:
        sock = bind_socket(host, port, reuse_port=reuse_port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc.strerror or exc)
        return 1
    admin_sock = None
    if config.admin.listen:
        admin_host, admin_port = host_port(config.admin.listen)
        if admin_port == port:
            # With SO_REUSEPORT (workers) both would bind and the kernel would spread the public
            # port's connections over the two listeners.
            log.error("admin.listen: %s is the public port; give the admin listener its own",
                      config.admin.listen)
            sock.close()
            return 1
        try:
            admin_sock = bind_socket(admin_host, admin_port, reuse_port=reuse_port)
        except OSError as exc:
            log.error("admin.listen: cannot listen on %s: %s", config.admin.listen, exc.strerror or exc)
            sock.close()
            return 1
    terminator = TlsTerminator(config.tls) if config.tls is not None else None
    redirect_sock = redirect_server = None
    if config.tls is not None and config.tls.redirect_from:
        redirect_host, redirect_port = host_port(config.tls.redirect_from)
        try:
            redirect_sock = bind_socket(redirect_host, redirect_port, reuse_port=reuse_port)
        except OSError as exc:
            log.error("tls.redirect_from: cannot listen on %s: %s", config.tls.redirect_from,
                      exc.strerror or exc)
            _close(sock, admin_sock)
            return 1
        redirect_server = Server(redirect_handler(port), limits_from(config.proxy))
    server = Server(app, limits_from(config.proxy), scheme="https" if terminator else "http")
    admin_server = Server(app.admin, limits_from(config.proxy)) if admin_sock is not None else None
    try:
        await app.start()
    except Exception:
        log.exception("start-up failed")
        _close(sock, admin_sock, redirect_sock)
        with contextlib.suppress(Exception):
            await app.close()
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    resolved = config_path(config_file)
    reloader = Reloader(app, resolved)
    app.gateway.reloader = reloader
    app.on_reload.append(lambda applied: server.set_limits(limits_from(applied.proxy)))
    if admin_server is not None:
        app.on_reload.append(lambda applied: admin_server.set_limits(limits_from(applied.proxy)))
    if terminator is not None:
        app.on_reload.append(lambda applied: _reload_certificates(terminator, applied))
    loop.add_signal_handler(signal.SIGHUP, reloader.request, "SIGHUP")
    reloader.start()
    record = None if worker else pidfiles.register(resolved)
    tune_gc()
    if admin_server is not None and admin_sock is not None:
        await admin_server.listen(sock=admin_sock)
        app.admin_listening = True
        bound = admin_sock.getsockname()
        app.admin_url = f"http://{_url_host(str(bound[0]))}:{bound[1]}"
        log.info("admin listener on %s (the admin API, dashboard, docs and full metrics)", app.admin_url)
    if terminator is not None:
        await server.listen(sock=sock, tls=terminator.context)
    else:
        await server.listen(sock=sock)
    app.url = f"{server.scheme}://{host}:{sock.getsockname()[1]}"
    if redirect_server is not None and redirect_sock is not None:
        await redirect_server.listen(sock=redirect_sock)
        log.info("redirecting plain HTTP on %s to HTTPS", config.tls.redirect_from if config.tls else "")
    log.info("listening on %s (pid %d)", app.url, os.getpid())
    await stop.wait()
    log.info("draining: in-flight requests have %gs", grace)
    app.gateway.draining = True
    if admin_server is not None:
        await admin_server.shutdown(min(grace, 5.0))
    if redirect_server is not None:
        await redirect_server.shutdown(min(grace, 5.0))
    await server.shutdown(grace)
    await reloader.close()
    await app.close()
    if record is not None:
        pidfiles.unregister(record)
    log.info("stopped")
    return 0


def _close(*socks: socket.socket | None) -> None:
    for one in socks:
        if one is not None:
            one.close()


def _reload_certificates(terminator: TlsTerminator, applied: Any) -> None:
    """A reload's certificates, from the next handshake on (TLS on or off needs a restart)."""
    if applied.tls is None:
        log.warning("reload: tls was removed; the listener keeps serving HTTPS until a restart")
        return
    try:
        terminator.reload(applied.tls)
    except ValueError as exc:
        log.error("reload: tls: %s; the previous certificates keep serving", exc)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run(config_file: str | None, host: str, port: int, workers: int = 1, grace: float = 30.0) -> int:
    """`gateway run`: one process, or a supervisor of `workers` processes."""
    if workers <= 1:
        return _run_loop(config_file, host, port, grace, reuse_port=False)
    return Supervisor(config_file, host, port, workers, grace).run()


def _run_loop(config_file: str | None, host: str, port: int, grace: float, *, reuse_port: bool,
              worker: bool = False) -> int:
    serving = serve_process(config_file, host, port, grace, reuse_port=reuse_port, worker=worker)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        return asyncio.run(serving)
    return uvloop.run(serving)


def _worker(config_file: str | None, host: str, port: int, grace: float) -> None:
    sys.exit(_run_loop(config_file, host, port, grace, reuse_port=True, worker=True))


class Supervisor:
    """Keeps `workers` processes serving one port; drains them all on SIGTERM."""

    QUICK_DEATH = 2.0  # a worker dying this soon after its start counts as a failed start
    MAX_FAILED_STARTS = 5

    def __init__(self, config_file: str | None, host: str, port: int, workers: int, grace: float) -> None:
        self.config_file = config_file
        self.host = host
        self.port = port
        self.workers = workers
        self.grace = grace
        self._context = multiprocessing.get_context("spawn")
        self._procs: list[Any] = [None] * workers
        self._started: list[float] = [0.0] * workers
        self._failures = [0] * workers
        self._stopping = False

    def _spawn(self, index: int) -> None:
        proc = self._context.Process(target=_worker, name=f"gateway-worker-{index}",
                                     args=(self.config_file, self.host, self.port, self.grace))
        proc.start()
        self._procs[index] = proc
        self._started[index] = time.monotonic()

    def _stop(self, *_: Any) -> None:
        self._stopping = True

    def _forward_reload(self, *_: Any) -> None:
        """SIGHUP: every worker reloads (each validates the file and logs the outcome)."""
        for proc in self._procs:
            if proc is not None and proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGHUP)

    def run(self) -> int:
        try:  # a busy port fails here, before any worker starts
            bind_socket(self.host, self.port, reuse_port=True).close()
        except OSError as exc:
            print(f"gateway: cannot listen on {self.host}:{self.port}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._forward_reload)
        for index in range(self.workers):
            self._spawn(index)
        record = pidfiles.register(config_path(self.config_file))
        log.info("supervising %d workers on %s:%d", self.workers, self.host, self.port)
        try:
            return self._supervise()
        finally:
            pidfiles.unregister(record)

    def _supervise(self) -> int:
        code = 0
        while not self._stopping:
            time.sleep(0.2)
            for index, proc in enumerate(self._procs):
                if self._stopping or proc.is_alive():
                    continue
                lived = time.monotonic() - self._started[index]
                self._failures[index] = self._failures[index] + 1 if lived < self.QUICK_DEATH else 0
                if self._failures[index] >= self.MAX_FAILED_STARTS:
                    print(f"gateway: worker {index} keeps failing to start (exit {proc.exitcode}); "
                          "stopping", file=sys.stderr)
                    self._stopping = True
                    code = 1
                    break
                pause = min(5.0, 0.2 * 2 ** self._failures[index]) if self._failures[index] else 0
                print(f"gateway: worker {index} (pid {proc.pid}) exited with {proc.exitcode}; "
                      f"starting a new one{f' in {pause:g}s' if pause else ''}", file=sys.stderr)
                time.sleep(pause)
                if not self._stopping:
                    self._spawn(index)
        for proc in self._procs:
            if proc is not None and proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 10
        for proc in self._procs:
            if proc is None:
                continue
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        return code
