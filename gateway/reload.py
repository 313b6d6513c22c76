"""Reloading the configuration of a running process, without dropping a request.

Three triggers, one path: SIGHUP (what `gateway reload` sends, through the supervisor to every
worker), and a change of the config file's content (checked every `reload.interval` seconds
while `reload.watch` is on; a `touch` alone changes nothing). Each reload reads and validates
the whole file first: an invalid one is refused, the field-naming error goes to the log and the
running configuration keeps serving. A valid one is swapped in by `Gateway.reload` (routes,
services, limits, policies, consumers at once; in-flight requests finish on the configuration
they started with; pooled connections to unchanged targets are kept).

Reloads never overlap: a trigger during a reload runs one more reload after it. The outcome is
counted (`gateway_config_reloads_total{result}`) and shown in `/metrics` (`config`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.background import Periodic
from gateway.config import ConfigError, load_config

if TYPE_CHECKING:
    from gateway.entry import GatewayApp

log = logging.getLogger("gateway.reload")


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)  # follows symlinks: a Kubernetes ConfigMap swap changes the inode
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Reloader:
    """Reloads `app` from `config_file` on request (SIGHUP) and when the file changes."""

    def __init__(self, app: GatewayApp, config_file: str | Path) -> None:
        self.app = app
        self.path = Path(config_file)
        self.applied = 0
        self.refused = 0
        self.last: dict[str, Any] = {"result": None, "at": None, "reason": None, "error": None}
        self._stamp = _stamp(self.path)
        self._seen = _digest(self.path)  # the content last loaded (or refused)
        self._running: asyncio.Task[None] | None = None
        self._again: str | None = None
        self._watch: Periodic | None = None

    def start(self) -> None:
        settings = self.app.gateway.config.reload
        self._watch = Periodic(settings.interval, self._check, "config watch")
        self._watch.start()

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)

    def request(self, reason: str) -> None:
        """Reload soon (safe to call from a signal handler on the loop)."""
        if self._running is not None and not self._running.done():
            self._again = reason
            return
        self._running = asyncio.get_running_loop().create_task(self._run(reason), name="reload")

    async def _run(self, reason: str) -> None:
        next_reason: str | None = reason
        while next_reason is not None:
            await self.reload(next_reason)
            next_reason, self._again = self._again, None

    async def _check(self) -> None:
        if not self.app.gateway.config.reload.watch:
            return
        stamp = _stamp(self.path)
        if stamp is None or stamp == self._stamp:
            return
        self._stamp = stamp
        if _digest(self.path) != self._seen:
            self.request("the config file changed")

    async def reload(self, reason: str) -> bool:
        """Load, validate and apply the file; False (and the old configuration serving) if not."""
        self._stamp = _stamp(self.path)
        self._seen = _digest(self.path)
        try:
            config = load_config(self.path)
        except ConfigError as exc:
            return self._refuse(reason, str(exc))
        try:
            pinned = await self.app.reload(config)
        except Exception as exc:  # a policy that cannot start (a JWKS file gone, ...)
            log.exception("reload (%s): the new configuration failed to start", reason)
            return self._refuse(reason, f"the new configuration failed to start: {type(exc).__name__}: {exc}")
        self.applied += 1
        self.app.gateway.stats.reloads["applied"] = self.applied
        self.last = {"result": "applied", "at": time.time(), "reason": reason, "error": None}
        if pinned:
            log.warning("reload: %s changed; the running values stay until a restart",
                        ", ".join(pinned))
        log.info("configuration reloaded (%s): %d services, %d routes, %d consumers", reason,
                 len(config.services), len(config.routes), len(config.auth.consumers))
        return True

    def _refuse(self, reason: str, error: str) -> bool:
        self.refused += 1
        self.app.gateway.stats.reloads["refused"] = self.refused
        self.last = {"result": "refused", "at": time.time(), "reason": reason, "error": error}
        log.error("reload (%s) refused, the running configuration keeps serving: %s", reason, error)
        return False
