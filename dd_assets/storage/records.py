"""A stage's records: ``stage.json`` (the commit) and ``partitioning.json``, read, checked and replaced in one step."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from upath import UPath

from dd_assets.storage.conditional_write import CommitConflictError, put_if

EMPTY_STATUSES = ("completed_empty", "skipped_empty_upstream")


class StageStorageError(RuntimeError):
    """A stage directory cannot be read or written."""


class StageRecordUnreadableError(StageStorageError):
    """A stage's ``stage.json`` exists but cannot be parsed."""


def read_record_at(
    path: UPath, where: str, absent: tuple[type[OSError], ...] = (FileNotFoundError,)
) -> dict[str, Any] | None:
    """The stage record at ``path`` (``None`` when reading it raises one of ``absent``).

    Raises :class:`StageRecordUnreadableError` when the record is not valid JSON with a file list.
    """
    data = read_bytes(path, where, absent)
    return None if data is None else parse_record(data, path, where)


def read_bytes(path: UPath, where: str, absent: tuple[type[OSError], ...] = (FileNotFoundError,)) -> bytes | None:
    """The bytes of the file at ``path``; ``None`` when reading raises one of ``absent``, else a storage error."""
    try:
        return path.read_bytes()
    except absent:
        return None
    except OSError as exc:
        raise StageStorageError(f"{where}: cannot read {path}: {exc}") from None


def parse_record(data: bytes, path: UPath, where: str) -> dict[str, Any]:
    """The stage record in ``data`` (read from ``path``), checked: a JSON object naming its files."""
    try:
        record = json.loads(data.decode("utf-8"))  # UnicodeDecodeError is a ValueError
        files = record["files"] if isinstance(record, dict) else None
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise ValueError("not a stage record")
        if not record["files"] and record.get("status") not in EMPTY_STATUSES:
            # every publish names at least one file (an empty output is an empty parquet file with its schema)
            raise ValueError(f"it names no files for status {record.get('status')!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise StageRecordUnreadableError(
            f"{where}: {path} is unreadable ({exc}); rematerialize the stage to repair it"
        ) from None
    return record


def read_partitioning_record(path: UPath, where: str) -> dict[str, Any] | None:
    """The ``partitioning.json`` at ``path``, checked, or ``None`` when there is none."""
    data = read_bytes(path, where)
    if data is None:
        return None
    try:
        current = json.loads(data.decode("utf-8"))
        if not isinstance(current, dict) or not isinstance(current.get("partitioning"), str | None):
            raise ValueError("not a partitioning record")
    except ValueError as exc:
        raise StageRecordUnreadableError(
            f"{where}: {path} is unreadable ({exc}); rematerialize the stage to repair it"
        ) from None
    return current


def write_json(
    stage_dir: UPath,
    name: str,
    record: dict[str, Any],
    *,
    local: bool,
    conditional: bool = False,
    replaces: str | None = None,
) -> None:
    """Replace ``stage_dir/name`` in one step: a durable rename on a ``local`` file system, one PUT on an object
    store. ``conditional`` (S3): only if the object there is still the one read with ETag ``replaces`` (``None``:
    only if there is none), else :class:`~dd_assets.storage.conditional_write.CommitConflictError`."""
    text = json.dumps(record, indent=2, sort_keys=True, default=str)
    target = stage_dir / name
    if local:
        Path(stage_dir.path).mkdir(parents=True, exist_ok=True)
        tmp = Path(target.path).with_name(f".{name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target.path)
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(stage_dir.path, os.O_RDONLY)  # make the rename itself durable
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    elif conditional:
        try:
            put_if(target, text.encode(), replaces)  # one object PUT: atomic, and fenced
        except CommitConflictError as exc:
            raise CommitConflictError(
                f"{exc}: another run committed the stage after this run started publishing (this run's lease "
                "expired while it was paused), so this run published nothing"
            ) from None
    else:
        target.write_text(text)  # one object PUT: atomic on object stores
