"""Publishing a finished stage: a new version folder, a lock check, then ``stage.json`` replaced in one step.

A stage runs in a local work directory. Publishing writes the new parquet files into a fresh
``versions/<version>/`` folder, checks that the run still holds the stage's lock, then replaces ``stage.json`` in one
step (the commit point; readers follow its ``files``). Only then is the ``data`` link switched, the artifacts swapped
in and the superseded versions removed (:mod:`dd_assets.storage.cleanup`). On an ``s3://`` base_dir the commit is
conditional on the record the run read (``If-Match`` on its ETag), so a writer that lost its lease can never
overwrite another writer's commit or delete its files (see :mod:`dd_assets.storage.object_store_lock`). No folder a
reader is pointed at (``data``, ``dagster/uri``) ever holds files of two versions, and a run killed before the
commit leaves the previous output untouched.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from upath import UPath

from dd_assets.spec.secrets import redact
from dd_assets.storage.cleanup import after_commit, remove_tree, version_folders
from dd_assets.storage.conditional_write import read_with_etag
from dd_assets.storage.layout import PARTITIONING_RECORD, STAGE_RECORD, describe, version_folder
from dd_assets.storage.partitioning import partitioning_id, partitioning_record
from dd_assets.storage.records import (
    StageRecordUnreadableError,
    StageStorageError,
    parse_record,
    read_record_at,
    write_json,
)
from dd_assets.storage.stage_lock import StageLock

if TYPE_CHECKING:
    from dd_assets.storage.stage_store import StageStore


@dataclass
class StageOutput:
    """What a stage run hands to the IO manager to publish."""

    workflow: str
    stage: str
    version: str
    work_dir: Path
    files: list[Path]
    record: dict[str, Any]
    lock: StageLock
    partition: str | None = None
    partitions_def: dg.PartitionsDefinition | None = None
    artifacts_dir: Path | None = None
    extra_cleanup: list[Path] = field(default_factory=list)


def publish(store: StageStore, output: StageOutput) -> dict[str, Any]:
    """Publish a finished stage: new version folder, lock check, ``stage.json`` (the commit), then tidy up.

    The caller holds ``output.lock`` for the whole call (and releases it). Returns the committed record.
    """
    workflow, stage, partition = output.workflow, output.stage, output.partition
    stage_dir = store.stage_dir(workflow, stage, partition)
    folder = version_folder(output.version)
    previous, seen = _read_record_to_replace(store, stage_dir, describe(workflow, stage, partition))
    names: list[str] = []
    try:
        # the folders a commit supersedes are those there before it: a folder written after belongs to a
        # writer this commit does not know (and that writer's own commit will fail, see _write_record)
        superseded = version_folders(stage_dir) - {output.version, (previous or {}).get("version")}
        for index, source in enumerate(output.files):
            name = f"{folder}/part-{index:05d}.parquet"
            _put_file(store, source, stage_dir / name, link=_is_within(source, output.work_dir))
            names.append(name)
        _make_durable(store, [stage_dir / n for n in names], stage_dir / folder)
        output.lock.check_held()
        missing = [n for n in names if not (stage_dir / n).exists()]
        if missing:
            raise StageStorageError(f"files vanished before the commit: {', '.join(missing)}")
        record = {
            **output.record,
            "files": names,
            "version": output.version,
            "previous": _summary(previous),
            "superseded": sorted(superseded),
        }
        if partition is not None and output.partitions_def is not None:
            record["partitioning"] = partitioning_id(output.partitions_def)
        _record_partitioning(store, workflow, stage, output)
        _write_record(store, stage_dir, record, replaces=seen)
    except Exception as exc:  # noqa: BLE001 - whatever the store raised, take back what this attempt wrote
        remove_tree(store, stage_dir / folder)
        reason = redact(str(exc), store.secret_values())
        raise StageStorageError(
            f"{describe(workflow, stage, partition)}: publishing to {stage_dir} failed ({reason}); "
            "the previous output is unchanged"
        ) from None

    # Committed. What follows points the `data` link at the new version, replaces informational artifacts
    # and frees space; a failure here is logged, never raised: the new output is already published.
    after_commit(store, output, record)
    return record


def _record_partitioning(store: StageStore, workflow: str, stage: str, output: StageOutput) -> None:
    """Before a commit: make ``partitioning.json`` name the partitioning it is made under, so whole-stage
    reads switch to it (and never mix in partitions, or the unpartitioned output, of an earlier one)."""
    if output.partition is not None and output.partitions_def is None:
        return  # a partition published without its definition: storage cannot say more
    try:
        current = store.stored_partitioning(workflow, stage)
    except StageRecordUnreadableError:
        current = {"partitioning": "unreadable"}
    if output.partitions_def is None and (current is None or current.get("partitioning") is None):
        return  # an unpartitioned stage that never was partitioned here: nothing to record
    wanted = partitioning_record(output.partitions_def)
    if current != wanted:
        write_json(store.stage_dir(workflow, stage), PARTITIONING_RECORD, wanted, local=store.is_local)


def _read_record_to_replace(
    store: StageStore, stage_dir: UPath, where: str
) -> tuple[dict[str, Any] | None, str | None]:
    """The record a publish replaces (``None``: none, or unreadable) and, on S3, the ETag it was read with."""
    path = stage_dir / STAGE_RECORD
    if not store.conditional_commits:
        try:
            return read_record_at(path, where), None
        except StageRecordUnreadableError:
            return None, None
    try:
        found = read_with_etag(path)
    except OSError as exc:
        raise StageStorageError(f"{where}: cannot read {path}: {exc}") from None
    if found is None:
        return None, None
    try:
        return parse_record(found[0], path, where), found[1]
    except StageRecordUnreadableError:
        return None, found[1]


def _write_record(store: StageStore, stage_dir: UPath, record: dict[str, Any], replaces: str | None = None) -> None:
    """Write ``stage.json`` (the commit). On S3 only if the record there is still the one read with ETag
    ``replaces`` (``None``: only if there is none), else :class:`CommitConflictError`."""
    conditional = store.conditional_commits
    write_json(stage_dir, STAGE_RECORD, record, local=store.is_local, conditional=conditional, replaces=replaces)


def _put_file(store: StageStore, source: Path, target: UPath, *, link: bool) -> None:
    if store.is_local:
        Path(target.path).parent.mkdir(parents=True, exist_ok=True)
        if link:  # a file this run wrote: no copy, and the artifacts keep theirs
            try:
                os.link(source, target.path)
                return
            except OSError:
                pass
        shutil.copyfile(source, target.path)  # e.g. an output_override the user may rewrite later
    else:
        with open(source, "rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)


def _make_durable(store: StageStore, files: list[UPath], folder: UPath) -> None:
    """Flush the new files and their folder to disk before the commit names them (local base_dir)."""
    if not store.is_local:
        return  # an object PUT is durable when it returns
    for path in [*files, folder]:
        fd = os.open(path.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {k: record.get(k) for k in ("version", "files", "run_id", "data_version", "materialized_at")}


def _is_within(path: Path, parent: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False
