"""Which gateway processes serve a config file: how `gateway reload` finds whom to signal.

Each `gateway run` (one process, or the supervisor of its workers) leaves a small file in
`$XDG_RUNTIME_DIR/pygateway` (or the temp dir's `pygateway-<uid>`), named after a hash of the
config file's real path and its pid, holding the pid and the process's start time. A file whose
process is gone, or whose pid now belongs to another process (another start time), is stale
and removed when read, so a reused pid is never signalled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path


def run_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "pygateway"
    return Path(tempfile.gettempdir()) / f"pygateway-{os.getuid()}"


def _stem(config_file: str | Path) -> str:
    return hashlib.sha256(str(Path(config_file).resolve()).encode()).hexdigest()[:16]


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), '' elsewhere, None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def register(config_file: str | Path, pid: int | None = None) -> Path:
    """Record this process as serving `config_file`; returns the file (remove it at exit)."""
    pid = pid or os.getpid()
    directory = run_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{_stem(config_file)}-{pid}.json"
    path.write_text(json.dumps({"pid": pid, "config": str(Path(config_file).resolve()),
                                "started": _started(pid) or ""}))
    return path


def unregister(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def serving(config_file: str | Path) -> list[int]:
    """The live processes serving `config_file` (stale records are removed)."""
    pids = []
    for path in sorted(run_dir().glob(f"{_stem(config_file)}-*.json")):
        try:
            record = json.loads(path.read_text())
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            unregister(path)
            continue
        started = _started(pid)
        if started is None or (started and record.get("started") and started != record["started"]):
            unregister(path)
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            unregister(path)
            continue
        except PermissionError:
            pass  # alive, another user's: signalling it will say so
        pids.append(pid)
    return pids
