"""Reading published stages: one stage or partition, or a partitioned stage's partitions as one dataset.

Only partitions published under the stage's current partitioning are ever read; one published under an earlier
partitioning (another key set, or the stage was unpartitioned) is stale and never mixed in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pyarrow as pa
from upath import UPath

from dd_assets.storage.dataset import StageDataset
from dd_assets.storage.layout import PARTITIONS_DIR, STAGE_RECORD, describe, version_folder
from dd_assets.storage.lineage import stale_partition_blocks
from dd_assets.storage.partitioning import STORED, definition_keys, of_partitioning, partitioning_id
from dd_assets.storage.records import StageStorageError, read_record_at

if TYPE_CHECKING:
    from dd_assets.storage.stage_store import StageStore


def read_stage(
    store: StageStore,
    workflow: str,
    stage: str,
    partition_key: str | None = None,
    *,
    partition_keys: list[str] | None = None,
    partitions_def: dg.PartitionsDefinition | None | str = STORED,
) -> StageDataset:
    """A handle on the published output of a stage.

    For a partitioned stage, ``partition_key`` gives one partition; without it, the partitions are read in key
    order: ``partition_keys`` when given (a missing one is an error), else every published partition of the
    current partitioning. Only partitions published under the current partitioning are ever read; one published
    under an earlier partitioning (another key set, or the stage was unpartitioned) is stale and never mixed in.

    ``partitions_def`` is the stage's current definition when the caller has it (``None``: unpartitioned, read
    the stage itself; a definition: read its partitions, all of its keys when they are known without an
    instance). By default (``STORED``) storage says: the partitioning the stage was last published under.
    """
    where = describe(workflow, stage)
    if partitions_def is None:
        if partition_key is not None or partition_keys is not None:
            raise StageStorageError(f"{where}: the stage is not partitioned; read it without partition keys")
        return read_one(store, workflow, stage, None)
    if partitions_def is STORED:
        current = store.stored_partitioning(workflow, stage)
        if current is None:  # storage does not record the stage's partitioning
            return _read_unrecorded(store, workflow, stage, partition_key, partition_keys)
        wanted = current.get("partitioning")
        if wanted is None:
            if partition_key is not None or partition_keys is not None:
                raise StageStorageError(
                    f"{where}: the stage was last published unpartitioned; its partitions are from an earlier "
                    "partitioning and are not read"
                )
            return read_one(store, workflow, stage, None)
        known = current.get("keys")
    else:
        wanted, known = partitioning_id(partitions_def), definition_keys(partitions_def)
        partition_keys = partition_keys if partition_keys is not None or partition_key is not None else known
    if partition_key is not None:
        record = store.read_record(workflow, stage, partition_key)
        if record is not None and not of_partitioning(record, wanted, known):
            raise StageStorageError(
                f"{describe(workflow, stage, partition_key)}: published under an earlier partitioning of the "
                "stage, so it is stale; rematerialize the partition"
            )
        return read_one(store, workflow, stage, partition_key, record)
    if partition_keys is not None:
        records = {key: store.read_record(workflow, stage, key) for key in partition_keys}
        stale = [key for key, r in records.items() if r is not None and not of_partitioning(r, wanted, known)]
        if stale:
            raise StageStorageError(
                f"{where}: partition(s) {', '.join(map(repr, stale))} were published under an earlier "
                "partitioning of the stage, so they are stale; rematerialize them (or backfill the stage) "
                "before reading the whole stage"
            )
    else:
        stored = stored_partition_records(store, workflow, stage)
        records = {key: r for key, r in stored.items() if of_partitioning(r, wanted, known)}
    return _combine(store, workflow, stage, records)


def _read_unrecorded(
    store: StageStore, workflow: str, stage: str, partition_key: str | None, partition_keys: list[str] | None
) -> StageDataset:
    """A stage whose storage does not record its partitioning: the stage itself, else what partitions are there."""
    if partition_key is not None:
        return read_one(store, workflow, stage, partition_key)
    if partition_keys is None and (store.stage_dir(workflow, stage) / STAGE_RECORD).exists():
        return read_one(store, workflow, stage, None)
    if partition_keys is not None:
        records = {key: store.read_record(workflow, stage, key) for key in partition_keys}
    else:
        records = stored_partition_records(store, workflow, stage)
    return _combine(store, workflow, stage, records)


def _combine(store: StageStore, workflow: str, stage: str, records: dict[str, dict[str, Any] | None]) -> StageDataset:
    """The partitions of ``records`` (key -> record, ``None`` when unpublished) as one dataset."""
    if not records:
        raise StageStorageError(
            f"{describe(workflow, stage)}: no published output at {store.stage_dir(workflow, stage)}; "
            "materialize it first"
        )
    missing = [key for key, record in records.items() if record is None]
    if missing:
        raise StageStorageError(
            f"{describe(workflow, stage)}: partition(s) {', '.join(map(repr, missing))} of {len(records)} are "
            "not materialized; materialize them (or backfill the stage) before reading the whole stage"
        )
    stale = stale_partition_blocks(records)
    if stale:
        listed = "; ".join(f"partition {key!r} {why}" for key, why in stale.items())
        raise StageStorageError(
            f"{describe(workflow, stage)}: {listed}, so its rows overlap the newer partitions' (keys were added); "
            "rematerialize those partitions (or backfill the stage) before reading the whole stage"
        )
    parts = [read_one(store, workflow, stage, key, record) for key, record in records.items()]
    try:
        return StageDataset.combine(parts, store.stage_dir(workflow, stage))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise StageStorageError(
            f"{describe(workflow, stage)}: the schemas of partitions {', '.join(map(repr, records))} do not "
            f"combine ({exc}); rematerialize the partitions whose columns changed type"
        ) from None


def stored_partition_records(store: StageStore, workflow: str, stage: str) -> dict[str, dict[str, Any]]:
    """Key -> record of every published partition of a stage, in key order, each read once."""
    folder = store.stage_dir(workflow, stage) / PARTITIONS_DIR
    if not folder.exists():
        return {}
    records = {}
    for child in folder.iterdir():
        where = f"{describe(workflow, stage)}, partition folder {child.name!r}"
        record = read_record_at(child / STAGE_RECORD, where, (FileNotFoundError, NotADirectoryError))
        if record is not None:
            key = record.get("partition")
            records[key if isinstance(key, str) else child.name] = record
    return dict(sorted(records.items()))


def read_one(
    store: StageStore, workflow: str, stage: str, partition: str | None, record: dict[str, Any] | None = None
) -> StageDataset:
    """One stage or partition as a dataset (``record``: its ``stage.json``, when the caller has read it)."""
    where = describe(workflow, stage, partition)
    if record is None:
        record = store.read_record(workflow, stage, partition)
    stage_dir = store.stage_dir(workflow, stage, partition)
    if record is None:
        raise StageStorageError(f"{where}: no published output at {stage_dir}; materialize it first")
    files = [stage_dir / name for name in record["files"]]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise StageStorageError(f"{where}: published files are missing ({', '.join(missing)}); rematerialize the stage")
    try:
        return StageDataset.from_files(
            version_dir(stage_dir, record), files, status=record.get("status", "completed"), record=record
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise StageStorageError(f"{where}: the published files' schemas do not combine ({exc})") from None


def version_dir(stage_dir: UPath, record: dict[str, Any]) -> UPath:
    """The folder of ``stage_dir`` holding exactly the files of ``record`` (what ``dagster/uri`` points at)."""
    files = record.get("files") or []
    folders = {str(Path(name).parent) for name in files}
    folder = folders.pop() if len(folders) == 1 else version_folder(record.get("version", ""))
    return stage_dir / folder
