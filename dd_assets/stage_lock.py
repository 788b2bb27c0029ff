"""One writer per stage: an exclusive lock held from the start of a stage run until its output is published.

The lock is ``fcntl.flock`` on ``<stage>/.lock`` (for a URL ``base_dir``: on the local work directory, so
it guards one machine). The kernel releases it when the holding process dies, so a killed run never leaves
a stale lock. The lock file records who holds it, for the error message of the run that loses.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path


class StageBusyError(RuntimeError):
    """Another run is materializing the same stage."""


_HELD: dict[str, int] = {}
_HELD_LOCK = threading.Lock()


def acquire(lock_path: Path, *, owner: dict, timeout_s: float, what: str) -> None:
    """Take the stage lock, waiting up to ``timeout_s`` seconds; raise :class:`StageBusyError` otherwise."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StageBusyError(
                        f"{what} is being materialized by another run ({_read_owner(fd)}); this run did not touch "
                        "it. Retry when that run ends, or set StageParquetIOManager(lock_timeout_s=...) to wait"
                    ) from None
                time.sleep(0.2)
    except BaseException:
        os.close(fd)  # closing also drops a lock taken just before an interrupt
        raise
    try:  # who holds it, for the loser's message; not needed for the lock itself
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
    except OSError:
        pass
    with _HELD_LOCK:
        _HELD[str(lock_path)] = fd


def release(lock_path: Path) -> None:
    """Release the stage lock if this process holds it."""
    with _HELD_LOCK:
        fd = _HELD.pop(str(lock_path), None)
    if fd is not None:
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _read_owner(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return "holder unknown"
    return ", ".join(f"{k} {v}" for k, v in data.items()) or "holder unknown"
