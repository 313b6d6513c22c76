"""prometheus_client multiprocess mode under `gateway run --workers N`.

A scrape reaches one worker, so every worker writes its cumulative totals into prometheus_client's
multiprocess files (`counter_<pid>.db`, `histogram_<pid>.db` in `$PROMETHEUS_MULTIPROC_DIR`) and
the scraped worker merges all of them with `MultiProcessCollector`. Two differences from the
library's usual use, both for the hot path's sake:

* Requests are counted in plain Python (gateway/stats.py); a worker copies its totals into its
  files about once a second (and before it answers a scrape), instead of an mmap write under a
  lock for every metric of every request. Another worker's numbers can be a second old.
* The directory is wiped once per start of the whole server, by the first worker to come up: a
  marker file names the supervisor (pid and start time) the files belong to, under an flock. A
  worker that the supervisor restarts after a crash finds its supervisor's marker and keeps the files,
  so the counters of the dead worker stay in the sums (counters never go backwards).

Without `PROMETHEUS_MULTIPROC_DIR` a worker of several uses `$TMPDIR/pygateway-metrics-<ppid>`;
a single process keeps everything in memory and needs no directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict, mmap_key

from gateway.metrics.series import Sample

log = logging.getLogger("gateway.metrics")

ENV = "PROMETHEUS_MULTIPROC_DIR"
MARKER = ".pygateway-run"
LOCK = ".pygateway-lock"


def supervisor_pid() -> int | None:
    """The pid of the process that spawned this worker, or None when this is the only process."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None else None


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (stable for a pid's lifetime)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def metrics_dir(environ: dict[str, str] | None = None) -> Path | None:
    """The directory this process writes its totals to, prepared; None in a single process.

    The environment variable wins (an operator's choice, e.g. a tmpfs volume); without it only a
    worker of several needs files.
    """
    env = os.environ if environ is None else environ
    run_pid = supervisor_pid()
    explicit = env.get(ENV)
    if explicit:
        path = Path(explicit)
    elif run_pid is not None:
        path = Path(tempfile.gettempdir()) / f"pygateway-metrics-{run_pid}"
        _remove_orphans(path.parent)
    else:
        return None
    owner = run_pid if run_pid is not None else os.getpid()
    prepare(path, f"{owner} {_start_time(owner)}")
    return path


def prepare(path: Path, run: str) -> None:
    """Create `path`, and wipe it unless its marker already names `run` (this server start)."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = path / MARKER
        try:
            current = marker.read_text().strip()
        except OSError:
            current = ""
        if current != run:
            for entry in path.iterdir():
                if entry.name == LOCK:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
            marker.write_text(run + "\n")
            log.info("metrics directory %s wiped for a new start", path)


def _remove_orphans(parent: Path) -> None:
    """Default directories of servers that are gone (their supervisor pid no longer runs)."""
    for entry in parent.glob("pygateway-metrics-*"):
        pid = entry.name.rsplit("-", 1)[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(entry, ignore_errors=True)


class ProcessFiles:
    """This process's multiprocess files; `write` stores absolute values (no increments)."""

    def __init__(self, path: Path, pid: int | None = None) -> None:
        pid = pid or os.getpid()
        self.path = path
        self._files = {
            "counter": MmapedDict(str(path / f"counter_{pid}.db")),
            "histogram": MmapedDict(str(path / f"histogram_{pid}.db")),
        }
        self._keys: dict[tuple[object, ...], str] = {}

    def write(self, samples: Iterator[Sample]) -> None:
        for s in samples:
            file = self._files.get(s.kind)
            if file is None:
                continue
            cache_key = (s.metric, s.name, s.labels)
            key = self._keys.get(cache_key)
            if key is None:
                names = [k for k, _ in s.labels]
                values = [v for _, v in s.labels]
                key = self._keys[cache_key] = mmap_key(s.metric, s.name, names, values, s.help)
            file.write_value(key, s.value, 0.0)

    def close(self) -> None:
        for file in self._files.values():
            file.close()
