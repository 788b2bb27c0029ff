"""One writer per stage: an exclusive lock held from the start of a stage run until Dagster has recorded its output.

The lock is ``fcntl.flock`` on ``<stage>/.lock`` (for a URL ``base_dir``: on the local work directory, so
it guards one machine). The kernel releases it when the holding process dies, so a killed run never leaves
a stale lock. The lock file records who holds it, for the error message of the run that loses.

A lock is only as good as its file: if someone deletes the stage folder, another run can create a new
``.lock`` and take that. So a lock is bound to the file's inode when taken, and :meth:`StageLock.check_held`
tells, before a commit, whether the path still names the locked file.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

READER_GRACE_S = 10.0
"""How long a writer waits for a reader holding the lock, whatever its own ``timeout_s``."""


class StageBusyError(RuntimeError):
    """Another run is materializing the same stage."""


class StageLockLostError(RuntimeError):
    """The lock file was deleted or replaced while this run held it (the stage folder was removed)."""


class StageLock:
    """The writer lock of one stage, as a context manager on one exact path.

    Args:
        path: the lock file.
        owner: who takes it (run id, pid), written into the file for the loser's message.
        timeout_s: how long to wait for another holder; ``0`` fails at once.
        what: ``"workflow 'w', stage 's'"``, for messages.
    """

    def __init__(self, path: Path, *, owner: dict, timeout_s: float, what: str, reader: bool = False):
        self.path = Path(path)
        self.owner = owner
        self.timeout_s = timeout_s
        self.what = what
        # A reader holds the lock for milliseconds to check the stage, writes nothing into the lock file, and
        # is waited for by writers (see READER_GRACE_S) so that reading never fails a run.
        self.reader = reader
        self._fd: int | None = None
        self.previous_owner: dict = {}

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> StageLock:
        """Take the lock, waiting up to ``timeout_s``; raise :class:`StageBusyError` otherwise."""
        deadline = time.monotonic() + self.timeout_s
        reader_deadline = time.monotonic() + READER_GRACE_S
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_owner(fd)
                os.close(fd)
                held_by_reader = holder == "holder unknown"
                if time.monotonic() >= deadline and not (held_by_reader and time.monotonic() < reader_deadline):
                    raise StageBusyError(
                        f"{self.what} is being materialized by another run ({holder}); this run did not touch "
                        "it. Retry when that run ends, or set StageParquetIOManager(lock_timeout_s=...) to wait"
                    ) from None
                time.sleep(0.05 if held_by_reader else 0.2)
                continue
            except BaseException:
                os.close(fd)
                raise
            if not _same_file(fd, self.path):
                os.close(fd)  # the file was deleted or replaced between open and flock: lock the new one
                continue
            break
        # A writer that released cleanly emptied the file: what is left names a writer that died holding it.
        self.previous_owner = _parse_owner(fd)
        if not self.reader:
            try:  # who holds it, for the loser's message; not needed for the lock itself
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(self.owner).encode(), 0)
            except OSError:
                pass
        self._fd = fd
        return self

    def check_held(self) -> None:
        """Raise :class:`StageLockLostError` unless the lock path still names the file this object locked."""
        if self._fd is None or not _same_file(self._fd, self.path):
            raise StageLockLostError(
                f"{self.what}: the stage's lock file {self.path} was deleted or replaced while this run held it "
                "(was the stage folder removed?), so another run may be writing the stage; this run published "
                "nothing"
            )

    def when_lost(self, callback: Callable[[str], Any]) -> Callable[[], None]:
        """Call ``callback(message)`` if the lock is lost while held; returns an undo.

        An ``flock`` is never taken away from a live holder (a removed lock file is found by :meth:`check_held`),
        so this lock never calls it; :class:`~dd_assets.storage.object_store_lock.ObjectStoreLock` does when its
        lease is lost.
        """
        return lambda: None

    def release(self) -> None:
        """Release the lock (a no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if not self.reader and _same_file(fd, self.path):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> StageLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _parse_owner(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_owner(fd: int) -> str:
    return ", ".join(f"{k} {v}" for k, v in _parse_owner(fd).items()) or "holder unknown"


def process_is_gone(pid: object) -> bool:
    """True when no process ``pid`` exists on this machine."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
