"""One writer per stage across machines: a lease object on the object store, taken with a conditional write.

For an ``s3://`` ``base_dir`` the writer lock of a stage (or partition) is the object ``<stage>/.lock``:

- taking it is one ``PUT`` with ``If-None-Match: *``, which S3 (and S3-compatible stores) grant to exactly one
  writer;
- the holder renews its lease every ``lease_s / 3`` seconds with ``If-Match: <its ETag>``, so a holder that
  lost the lease finds out at its next renewal or at :meth:`ObjectStoreLock.check_held` before its commit;
- a holder that dies stops renewing: once its lease has expired (``lease_s`` after the last renewal), the next
  run takes the lock over with ``If-Match`` on the expired lease's ETag (only one run can win that too);
- releasing deletes the object with ``If-Match`` (it never deletes a lease another run took over).

The local ``fcntl`` lock (:class:`~dd_assets.stage_lock.StageLock`) is taken first, so runs on one machine
still queue the cheap way, and the work directory on the machine is guarded as before.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from upath import UPath

from dd_assets.stage_lock import READER_GRACE_S, StageBusyError, StageLock, StageLockLostError

DEFAULT_LEASE_S = 60.0


class ObjectStoreLock:
    """The writer lock of one stage on an S3 ``base_dir``: a local lock, then a lease object (see module doc).

    It has :class:`~dd_assets.stage_lock.StageLock`'s interface (``acquire``, ``check_held``, ``release``,
    ``previous_owner``, context manager).
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
    ):
        self.local = local
        self.lease_path = lease_path
        self.owner = owner
        self.timeout_s = timeout_s
        self.what = what
        self.reader = reader
        self.lease_s = lease_s
        self.previous_owner: dict = {}
        self._etag: str | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._guard = threading.Lock()

    # --- S3 calls ------------------------------------------------------------------------------
    @property
    def _bucket_key(self) -> tuple[str, str]:
        bucket, _, key = self.lease_path.path.partition("/")
        return bucket, key

    def _call(self, method: str, **kwargs: Any) -> dict:
        bucket, key = self._bucket_key
        return self.lease_path.fs.call_s3(method, Bucket=bucket, Key=key, **kwargs)

    def _body(self) -> bytes:
        expires = time.time() + self.lease_s
        return json.dumps(
            {
                **self.owner,
                "reader": self.reader,
                "token": uuid.uuid4().hex,
                "expires_at": expires,
                "expires": datetime.fromtimestamp(expires, UTC).isoformat(),
            }
        ).encode()

    def _current(self) -> tuple[dict, str] | None:
        """The lease now on the store and its ETag (read in one GET), or ``None`` when there is none."""
        from fsspec.asyn import sync

        fs = self.lease_path.fs
        bucket, key = self._bucket_key

        async def get() -> tuple[bytes, str]:
            response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
            async with response["Body"] as stream:
                return await stream.read(), response["ETag"]

        try:
            body, etag = sync(fs.loop, get)
        except FileNotFoundError:
            return None
        try:
            lease = json.loads(body)
        except ValueError:
            lease = {}
        return (lease if isinstance(lease, dict) else {}), etag

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
            self._renewer = threading.Thread(target=self._renew, name="dd-assets-lease", daemon=True)
            self._renewer.start()
        return self

    def _take_lease(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        reader_deadline = time.monotonic() + READER_GRACE_S
        while True:
            try:
                self._etag = self._call("put_object", Body=self._body(), IfNoneMatch="*")["ETag"]
                return
            except FileExistsError:
                pass
            found = self._current()
            if found is None:
                continue  # released between our PUT and GET: try again
            lease, etag = found
            if float(lease.get("expires_at") or 0) < time.time():
                try:  # the holder stopped renewing (it died): take over its lease, if no other run did first
                    self._etag = self._call("put_object", Body=self._body(), IfMatch=etag)["ETag"]
                    self.previous_owner = lease
                    return
                except (OSError, FileNotFoundError):
                    continue
            held_by_reader = bool(lease.get("reader"))
            if time.monotonic() >= deadline and not (held_by_reader and time.monotonic() < reader_deadline):
                holder = ", ".join(f"{k} {lease[k]}" for k in ("run", "host", "pid", "expires") if k in lease)
                raise StageBusyError(
                    f"{self.what} is being materialized by another run ({holder or 'holder unknown'}; lease "
                    f"{self.lease_path}); this run did not touch it. Retry when that run ends, or set "
                    "StageParquetIOManager(lock_timeout_s=...) to wait"
                )
            time.sleep(0.1 if held_by_reader else 0.5)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            with self._guard:
                if self._etag is None:
                    return
                try:
                    self._etag = self._call("put_object", Body=self._body(), IfMatch=self._etag)["ETag"]
                except Exception as exc:  # noqa: BLE001 - any failure to renew means the lease may be gone
                    self._lost = f"renewing the lease failed ({type(exc).__name__}: {exc})"
                    return

    def check_held(self) -> None:
        """Raise :class:`StageLockLostError` unless this run still holds both its local lock and its lease."""
        self.local.check_held()
        found = None if self._lost else self._current()
        if self._lost or found is None or found[1] != self._etag:
            reason = self._lost or "the lease was taken over or removed"
            raise StageLockLostError(
                f"{self.what}: this run no longer holds the stage's lease {self.lease_path} ({reason}), so another "
                "run may be writing the stage; this run published nothing"
            )

    def release(self) -> None:
        """Release the lease (only if it is still ours) and the local lock; a no-op when not held."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        with self._guard:
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
