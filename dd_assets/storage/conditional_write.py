"""Conditional reads and writes of one S3 object: the compare-and-swap that fences commits and leases.

A write names the ETag of the object it replaces (``If-Match``), or that there must be none (``If-None-Match: *``);
S3 (and S3-compatible stores) apply it for exactly one writer and refuse the others with HTTP 412.
"""

from __future__ import annotations

from upath import UPath

from dd_assets.storage.stage_lock import StageLockLostError


class CommitConflictError(StageLockLostError):
    """A conditional write found the object changed: another writer committed since this run read it."""


def bucket_key(path: UPath) -> tuple[str, str]:
    """``(bucket, key)`` of an S3 path."""
    bucket, _, key = path.path.partition("/")
    return bucket, key


def read_with_etag(path: UPath) -> tuple[bytes, str] | None:
    """The bytes of an S3 object and their ETag, read in one GET; ``None`` when there is no such object."""
    from fsspec.asyn import sync

    fs = path.fs
    bucket, key = bucket_key(path)

    async def get() -> tuple[bytes, str]:
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        async with response["Body"] as stream:
            return await stream.read(), response["ETag"]

    try:
        return sync(fs.loop, get)
    except FileNotFoundError:
        return None


def put_if(path: UPath, body: bytes, etag: str | None) -> str:
    """Write an S3 object only if it still has ``etag`` (``None``: only if it does not exist); returns its new ETag.

    Raises :class:`CommitConflictError` when the object changed (or appeared, or vanished) meanwhile.
    """
    bucket, key = bucket_key(path)
    condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
    try:
        return path.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=body, **condition)["ETag"]
    except FileNotFoundError:  # If-Match on an object that is gone
        raise CommitConflictError(f"{path} was removed since it was read") from None
    except OSError as exc:
        if not precondition_failed(exc):
            raise
        raise CommitConflictError(f"{path} was changed by another writer since it was read") from None


def precondition_failed(exc: BaseException) -> bool:
    """True when S3 refused a conditional request because its condition did not hold (HTTP 412)."""
    if isinstance(exc, FileExistsError):  # s3fs's name for a failed If-None-Match
        return True
    response = getattr(exc.__cause__, "response", None) or {}
    return response.get("Error", {}).get("Code") == "PreconditionFailed"
