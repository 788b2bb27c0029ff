"""One writer per stage across machines: a lease object on the object store, taken with a conditional write.

For an ``s3://`` ``base_dir`` the writer lock of a stage (or partition) is the object ``<stage>/.lock``:

- taking it is one ``PUT`` with ``If-None-Match: *``, which S3 (and S3-compatible stores) grant to exactly one
  writer;
- the holder renews its lease every ``lease_s / 3`` seconds with ``If-Match: <its ETag>``. A renewal that fails
  (a transient error) is retried every ``lease_s / 12`` seconds; the lease is *lost* only when another writer took
  it (its ETag changed and the body names another holder), when it was deleted, or when no renewal has succeeded
  for ``lease_s`` seconds;
- a lost lease is final: :meth:`ObjectStoreLock.when_lost` callbacks run (the stage run stops generating) and
  :meth:`ObjectStoreLock.check_held` raises before a commit;
- a holder that dies stops renewing: once its lease has expired the next run takes the lock over with ``If-Match``
  on the expired lease's ETag (only one run can win that too);
- releasing deletes the object with ``If-Match`` (it never deletes a lease another run took over).

Clocks. A holder judges its own lease by its **monotonic** clock: the lease is its own until ``lease_s`` after the
moment it *sent* its last successful renewal, whatever its wall clock says. A writer taking over judges by the
lease body's ``expires_at`` (the holder's wall clock) plus a skew margin of ``min(5 s, lease_s / 4)``
(:func:`skew_margin`) on its own wall clock, or by having seen the same lease ETag unchanged for ``lease_s`` plus
that margin on its own monotonic clock, whichever comes first. So a holder whose wall clock runs up to the margin
behind the taker's is never taken over before its own deadline, and a holder whose clock runs ahead delays a
takeover by one lease at most.

Fencing. Clocks only decide who *generates*; they never decide what is *published*. A holder can pause (a GC pause,
slow requests) after its last lease check for longer than its lease, so the commit is a compare-and-swap on the
record itself: ``stage.json`` is written with ``If-Match`` on the ETag of the record this run read when it started
publishing (``If-None-Match: *`` for a first publish, :func:`~dd_assets.storage.conditional_write.put_if`). A
stale holder whose lease another writer took and committed under fails at its commit, and its cleanup removes only
its own version folder. The cleanup of a commit that succeeded deletes only the version folders the committed record
lists as ``superseded`` (those seen before the commit), never a folder that appeared after it.

The local ``fcntl`` lock (:class:`~dd_assets.storage.stage_lock.StageLock`) is taken first, so runs on one machine
still queue the cheap way, and the work directory on the machine is guarded as before.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from upath import UPath

from dd_assets.storage.conditional_write import bucket_key, precondition_failed, read_with_etag
from dd_assets.storage.stage_lock import READER_GRACE_S, StageBusyError, StageLock, StageLockLostError

logger = logging.getLogger(__name__)

DEFAULT_LEASE_S = 60.0
MAX_CLOCK_SKEW_S = 5.0


def skew_margin(lease_s: float) -> float:
    """How far a holder's wall clock may run behind a taker's without being taken over early (module doc)."""
    return min(MAX_CLOCK_SKEW_S, lease_s / 4)


def lease_body(owner: dict[str, Any], *, reader: bool, holder: str, expires: float) -> tuple[bytes, str]:
    """A lease object's body, naming its holder and (on the holder's wall clock) when it expires, and its token."""
    token = uuid.uuid4().hex
    body = {
        **owner,
        "reader": reader,
        "holder": holder,
        "token": token,
        "expires_at": expires,
        "expires": datetime.fromtimestamp(expires, UTC).isoformat(),
    }
    return json.dumps(body).encode(), token


def read_lease(path: UPath) -> tuple[dict, str] | None:
    """The lease now on the store and its ETag (read in one GET), or ``None`` when there is none."""
    found = read_with_etag(path)
    if found is None:
        return None
    body, etag = found
    try:
        lease = json.loads(body)
    except ValueError:
        lease = {}
    return (lease if isinstance(lease, dict) else {}), etag


def describe_holder(lease: dict, keys: tuple[str, ...]) -> str:
    """``run r, host h, ...`` of a lease body, for messages."""
    return ", ".join(f"{k} {lease[k]}" for k in keys if k in lease) or "holder unknown"


class LeaseLoss:
    """Whether a holder lost its lease, for good, and the callbacks to run when it does."""

    def __init__(self, what: str, lease_path: UPath):
        self.what = what
        self.lease_path = lease_path
        self.reason: str | None = None
        self._callbacks: list[Callable[[str], Any]] = []
        self._lock = threading.Lock()

    def declare(self, reason: str) -> None:
        """Record that the lease is lost (the first reason counts) and run the callbacks."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            callbacks = list(self._callbacks)
        logger.warning("%s: lost the lease %s: %s", self.what, self.lease_path, reason)
        for callback in callbacks:
            self._notify(callback)

    def _notify(self, callback: Callable[[str], Any]) -> None:
        try:
            callback(
                f"{self.what}: this run lost the stage's lease {self.lease_path} ({self.reason}); another run may be "
                "writing the stage, so this run stopped and will not publish"
            )
        except Exception as exc:  # noqa: BLE001 - a callback must never break the lease
            logger.warning("%s: a lost-lease callback failed: %s", self.what, exc)

    def when_lost(self, callback: Callable[[str], Any]) -> Callable[[], None]:
        """Call ``callback(message)`` once if the lease is lost (at once if it already is); returns an undo."""
        with self._lock:
            lost = self.reason is not None
            if not lost:
                self._callbacks.append(callback)
        if lost:
            self._notify(callback)

        def forget() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return forget


class ObjectStoreLock:
    """The writer lock of one stage on an S3 ``base_dir``: a local lock, then a lease object (see module doc).

    It has :class:`~dd_assets.storage.stage_lock.StageLock`'s interface (``acquire``, ``check_held``, ``release``,
    ``when_lost``, ``previous_owner``, context manager).
    """

    def __init__(
        self,
        local: StageLock,
        lease_path: UPath,
        *,
        owner: dict[str, Any],
        timeout_s: float,
        what: str,
        reader: bool = False,
        lease_s: float = DEFAULT_LEASE_S,
        clock: Callable[[], float] = time.time,
    ):
        self.local = local
        self.lease_path = lease_path
        self.owner = owner
        self.timeout_s = timeout_s
        self.what = what
        self.reader = reader
        self.lease_s = lease_s
        self.clock = clock  # the wall clock lease bodies are written and read with (a test skews it)
        self.skew_s = skew_margin(lease_s)
        self.previous_owner: dict = {}
        self._holder = uuid.uuid4().hex  # names this holder in every lease body it writes
        self._etag: str | None = None
        self._valid_until = 0.0  # monotonic: the lease is ours until then
        self._sent: dict[str, float] = {}  # token of a renewal whose answer is unknown -> when it was sent
        self._loss = LeaseLoss(what, lease_path)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._state = threading.Lock()  # the lease fields above
        self._io = threading.Lock()  # one lease request at a time: renewal, check, release

    # --- S3 calls ------------------------------------------------------------------------------
    def _call(self, method: str, **kwargs: Any) -> dict:
        bucket, key = bucket_key(self.lease_path)
        return self.lease_path.fs.call_s3(method, Bucket=bucket, Key=key, **kwargs)

    def _put_lease(self, **condition: str) -> None:
        """Write a new lease body under ``condition``; on success it is ours for ``lease_s`` from the send."""
        body, token = lease_body(
            self.owner, reader=self.reader, holder=self._holder, expires=self.clock() + self.lease_s
        )
        sent = time.monotonic()
        with self._state:
            self._sent[token] = sent
        etag = self._call("put_object", Body=body, **condition)["ETag"]
        with self._state:
            self._etag, self._valid_until = etag, sent + self.lease_s
            self._sent.clear()

    # --- the lock ------------------------------------------------------------------------------
    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._etag is not None

    def acquire(self) -> ObjectStoreLock:
        """Take the local lock, then the lease, waiting up to ``timeout_s``; raise :class:`StageBusyError`."""
        self.local.acquire()
        try:
            self._take_lease()
        except BaseException:
            self.local.release()
            raise
        if not self.reader:
            self._stop.clear()
            for target, name in ((self._renew, "dd-assets-lease"), (self._watch, "dd-assets-lease-deadline")):
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def _take_lease(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        reader_deadline = time.monotonic() + READER_GRACE_S
        seen: dict[str, float] = {}  # lease ETag -> when this run first saw it (monotonic)
        while True:
            try:
                self._put_lease(IfNoneMatch="*")
                return
            except FileExistsError:
                pass
            found = read_lease(self.lease_path)
            if found is None:
                continue  # released between our PUT and GET: try again
            lease, etag = found
            unchanged_for = time.monotonic() - seen.setdefault(etag, time.monotonic())
            expired = float(lease.get("expires_at") or 0) + self.skew_s < self.clock()
            if expired or unchanged_for >= self.lease_s + self.skew_s:
                try:  # the holder stopped renewing (it died): take over its lease, if no other run did first
                    self._put_lease(IfMatch=etag)
                    self.previous_owner = lease
                    return
                except (OSError, FileNotFoundError):
                    continue
            held_by_reader = bool(lease.get("reader"))
            if time.monotonic() >= deadline and not (held_by_reader and time.monotonic() < reader_deadline):
                holder = describe_holder(lease, ("run", "host", "pid", "expires"))
                raise StageBusyError(
                    f"{self.what} is being materialized by another run ({holder}; lease "
                    f"{self.lease_path}); this run did not touch it. Retry when that run ends, or set "
                    "StageParquetIOManager(lock_timeout_s=...) to wait"
                )
            time.sleep(0.1 if held_by_reader else 0.5)

    # --- keeping it ----------------------------------------------------------------------------
    def _renew(self) -> None:
        every, retry = self.lease_s / 3, max(0.05, self.lease_s / 12)
        wait = every
        while not self._stop.wait(wait):
            renewed = self._renew_once()
            if renewed is None:
                return
            wait = every if renewed else retry

    def _renew_once(self) -> bool | None:
        """One renewal: ``True`` renewed, ``False`` failed for now (retry), ``None`` released or lost (stop)."""
        with self._io:
            if self._etag is None or self.lost_reason is not None:
                return None
            try:
                self._put_lease(IfMatch=self._etag)
                return True
            except Exception as exc:  # noqa: BLE001 - judged below: lost only when the lease really is gone
                error = exc
            if precondition_failed(error) or isinstance(error, FileNotFoundError):
                try:
                    taken = self._adopt_if_mine()
                except Exception as exc:  # noqa: BLE001 - cannot tell yet: retry
                    taken, error = None, exc
                if taken is not None:
                    if taken:
                        self._loss.declare(taken)
                        return None
                    return True
        if self.lost_reason is None:
            logger.warning(
                "%s: renewing the lease %s failed (%s: %s); retrying until it expires",
                self.what,
                self.lease_path,
                type(error).__name__,
                error,
            )
        return False

    def _adopt_if_mine(self) -> str | None:
        """After a refused renewal: ``""`` if the lease on the store is still ours (a renewal whose answer was lost
        landed: take its ETag), else why it is not (taken over, removed). Call it holding ``_io``."""
        found = read_lease(self.lease_path)
        if found is None:
            return "the lease was removed"
        lease, etag = found
        if lease.get("holder") != self._holder:
            return f"the lease was taken over by another run ({describe_holder(lease, ('run', 'host', 'pid'))})"
        with self._state:
            sent = self._sent.get(str(lease.get("token")))
            if sent is not None:
                self._valid_until = max(self._valid_until, sent + self.lease_s)
            self._etag = etag
            self._sent.clear()
        return ""

    def _watch(self) -> None:
        """Declare the lease lost at its deadline, even while a renewal request hangs."""
        while True:
            with self._state:
                if self._etag is None or self._loss.reason is not None:
                    return
                remaining = self._valid_until - time.monotonic()
            if remaining <= 0:
                self.lost_reason  # noqa: B018 - declares it
                return
            if self._stop.wait(remaining):
                return

    @property
    def lost_reason(self) -> str | None:
        """Why this holder lost its lease (for good), or ``None`` while it holds it by its own clock."""
        with self._state:
            held, valid_until = self._etag is not None, self._valid_until
        if self._loss.reason is None and held and time.monotonic() >= valid_until:
            self._loss.declare(f"no renewal succeeded for {self.lease_s:g} s (lock_lease_s), so it may have expired")
        return self._loss.reason

    def when_lost(self, callback: Callable[[str], Any]) -> Callable[[], None]:
        """Call ``callback(message)`` once if the lease is lost (at once if it already is); returns an undo."""
        return self._loss.when_lost(callback)

    def check_held(self) -> None:
        """Raise :class:`StageLockLostError` unless this run still holds both its local lock and its lease."""
        self.local.check_held()
        reason = self.lost_reason
        if reason is None:
            with self._io:
                if self._etag is None:
                    reason = "the lock was released"
                else:
                    try:
                        reason = self._adopt_if_mine() or None
                    except Exception as exc:  # noqa: BLE001 - cannot tell: do not commit
                        reason = f"the lease could not be read ({type(exc).__name__}: {exc})"
                        raise self._lost_error(reason) from None
            if reason is not None:
                self._loss.declare(reason)
            reason = self.lost_reason
        if reason is not None:
            raise self._lost_error(reason)

    def _lost_error(self, reason: str) -> StageLockLostError:
        return StageLockLostError(
            f"{self.what}: this run no longer holds the stage's lease {self.lease_path} ({reason}), so another "
            "run may be writing the stage; this run published nothing"
        )

    def release(self) -> None:
        """Release the lease (only if it is still ours) and the local lock; a no-op when not held."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        with self._io:
            with self._state:
                etag, self._etag = self._etag, None
            if etag is not None:
                try:
                    self._call("delete_object", IfMatch=etag)
                except Exception:  # noqa: BLE001 - taken over or already gone: not ours to delete
                    pass
        self.local.release()

    def __enter__(self) -> ObjectStoreLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
