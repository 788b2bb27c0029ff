"""StageParquetIOManager: each stage's parquet in its own directory, published atomically.

Layout (public)::

    <base_dir>/<workflow>/<stage>/stage.json                 the commit: status, versions, counts, files
    <base_dir>/<workflow>/<stage>/versions/<version>/*.parquet  each published version, never changed
    <base_dir>/<workflow>/<stage>/data -> versions/<version>  (local base_dir) the current version
    <base_dir>/<workflow>/<stage>/artifacts/                 Data Designer's artifact directory
    <base_dir>/<workflow>/<stage>/partitions/<key>/          a partitioned stage: the same layout per partition
    <base_dir>/<workflow>/<stage>/partitioning.json          the partitioning whole-stage reads use (see read_stage)

A stage runs in a local work directory (``<stage>/.staging/<key>`` for a local ``base_dir``). Publishing
writes the new parquet files into a fresh ``versions/<version>/`` folder, checks that the run still holds
the stage's lock, then replaces ``stage.json`` in one step (the commit point; readers follow its
``files``). Only then is the ``data`` link switched to the new folder (one atomic rename), the artifacts
swapped in, and the versions the new record lists as ``superseded`` (the folders other than the new and the
previous one, seen before the commit) removed. On an ``s3://`` base_dir the commit is conditional on the record
the run read (``If-Match`` on its ETag), so a writer that lost its lease can never overwrite another writer's
commit or delete its files (see ``dd_assets.storage.object_store_lock``). No folder a reader is pointed
at (``data``, ``dagster/uri``) ever holds files of two versions, and a run killed before the commit
leaves the previous output untouched.

If a run dies between the commit and Dagster recording the materialization, storage is ahead of
Dagster; :meth:`StageParquetIOManager.reconcile` records the committed version in Dagster the next time
the stage is run or read, so the two agree again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import pyarrow as pa
from pydantic import ConfigDict, Field, field_validator
from upath import UPath

from dd_assets.spec.known_fields import refuse_unknown_fields
from dd_assets.spec.secrets import (
    LiteralSecretError,
    credential_paths,
    env_values,
    env_var_name,
    literal_credentials,
    nested_env_vars,
    redact,
    require_env_var_name,
    resolve_env_var,
    url_credentials,
)
from dd_assets.storage.dataset import StageDataset
from dd_assets.storage.lineage import stale_partition_blocks
from dd_assets.storage.stage_lock import StageLock

logger = logging.getLogger(__name__)

STAGE_RECORD = "stage.json"
DATA_DIR = "data"
VERSIONS_DIR = "versions"
ARTIFACTS_DIR = "artifacts"
STAGING_DIR = ".staging"
LOCK_FILE = ".lock"
VERSION_METADATA_KEY = "dd_assets/version"
LEGACY_PREVIOUS_DIR = ".previous"
PARTITIONS_DIR = "partitions"
PARTITIONING_RECORD = "partitioning.json"
EMPTY_STATUSES = ("completed_empty", "skipped_empty_upstream")
STORED = "stored"
"""``read_stage(partitions_def=STORED)``: the stage's partitioning as storage records it (see read_stage)."""
OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


MAX_FOLDER_NAME = 255  # bytes: the longest file name local file systems accept


def partition_dir_name(partition: str) -> str:
    """The folder name of a partition key: the key itself when it is a plain name, else percent-encoded.

    Distinct keys always get distinct names, and no name is ``.``, ``..``, hidden or contains ``/``: ``quote``
    leaves ``.`` as is, so a leading dot is written ``%2E``; ``""`` is ``%00`` (NUL is not a valid key). A name
    longer than a file system allows keeps its start and ends in ``%~`` and a hash of the key (``quote`` never
    writes ``%~``, so it cannot meet another key's name).
    """
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.=-]*", partition) and len(partition) <= MAX_FOLDER_NAME:
        return partition
    name = quote(partition, safe="") or "%00"
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name) > MAX_FOLDER_NAME:
        name = name[:200] + "%~" + hashlib.sha256(partition.encode()).hexdigest()[:32]
    return name


def partitioning_id(partitions_def: dg.PartitionsDefinition) -> str:
    """What identifies a partitioning in storage: a static definition's keys, else its class and description
    (a dynamic or time-window definition keeps its id as keys are added)."""
    from dd_assets.spec.versioning import partitions_fingerprint

    return hashlib.sha256(json.dumps(partitions_fingerprint(partitions_def), sort_keys=True).encode()).hexdigest()[:16]


def definition_keys(partitions_def: dg.PartitionsDefinition) -> list[str] | None:
    """The keys of a definition when they are known without a Dagster instance (not for dynamic partitions)."""
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        return None
    try:
        return list(partitions_def.get_partition_keys())
    except Exception:  # noqa: BLE001 - e.g. a multi-partition definition with a dynamic dimension
        return None


def describe(workflow: str, stage: str, partition: str | None = None) -> str:
    """``workflow 'w', stage 's'`` (and ``, partition 'k'``): how messages name a stage or one partition."""
    where = f"workflow {workflow!r}, stage {stage!r}"
    return f"{where}, partition {partition!r}" if partition is not None else where


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


class StageStorageError(RuntimeError):
    """A stage directory cannot be read or written."""


class StageRecordUnreadableError(StageStorageError):
    """A stage's ``stage.json`` exists but cannot be parsed."""


class StageParquetIOManager(dg.ConfigurableIOManager):
    """Stores every stage in ``<base_dir>/<workflow>/<stage>/`` (IO manager key ``"dd_stage_io_manager"``).

    Attributes:
        base_dir: a local path or an fsspec URL (``s3://bucket/prefix``) read through universal_pathlib.
        storage_options: fsspec options for a URL ``base_dir`` (endpoint, region, ...). Credentials are not
            accepted here as values: give them as ``dg.EnvVar("NAME")`` or in ``storage_secrets``.
        storage_secrets: fsspec options read from environment variables: option name -> variable name,
            e.g. ``{"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY"}``.
        local_work_dir: where stages run before upload when ``base_dir`` is not local (default: a temp dir).
        lock_timeout_s: how long a run waits for another run of the same stage to finish (default: fail at once).
        lock_lease_s: on an ``s3://`` base_dir, how long a writer's lease lasts without renewal; a run that dies
            holding a stage is taken over this long after its last renewal (see ``dd_assets.storage.object_store_lock``).
        checkpoint_every_s: on a URL base_dir, how often a running stage copies its finished batches to the store
            so a retry on another machine resumes them (see ``dd_assets.run.remote_checkpoint``); 0 turns it off.
    """

    # Validation errors never echo the input: storage options may hold a credential.
    model_config = ConfigDict(hide_input_in_errors=True)

    base_dir: str = "data"
    storage_options: dict[str, Any | None] = Field(default_factory=dict)  # null members allowed (see the resource)
    storage_secrets: dict[str, str] = Field(default_factory=dict)
    local_work_dir: str | None = None
    lock_timeout_s: float = 0.0
    lock_lease_s: float = 60.0
    checkpoint_every_s: float = 2.0

    def __init__(self, **data: Any) -> None:
        refuse_unknown_fields(type(self), data)
        options = dict(data.get("storage_options") or {})
        moved = {key: env_var_name(value) for key, value in options.items() if isinstance(value, dg.EnvVar)}
        if moved:  # dg.EnvVar("NAME") becomes a storage secret: the name stays in config, never the value
            data["storage_options"] = {k: v for k, v in options.items() if k not in moved}
            data["storage_secrets"] = {**(data.get("storage_secrets") or {}), **moved}
        super().__init__(**data)

    @classmethod
    def configure_at_launch(cls, **kwargs: Any) -> Any:
        """As Dagster's, refusing unknown fields now rather than when a run starts."""
        refuse_unknown_fields(cls, kwargs)
        return super().configure_at_launch(**kwargs)

    @field_validator("storage_options")
    @classmethod
    def _no_literal_credentials(cls, options: dict[str, Any | None]) -> dict[str, Any | None]:
        nested = nested_env_vars(options)
        if nested:
            raise ValueError(
                f"storage_options {', '.join(map(repr, nested))}: dg.EnvVar is only read at the top level of "
                "storage_options; put the credential in storage_secrets under its top-level option name"
            )
        found = credential_paths(options)
        if found:
            raise ValueError(
                f"storage_options {', '.join(map(repr, found))} would put a credential into Dagster's run config "
                "and UI (the value is not repeated here); give it as dg.EnvVar('NAME') or in "
                "storage_secrets={'<option>': '<ENV_VAR_NAME>'}"
            )
        found = literal_credentials(options)  # URLs with user:password@ or ?key=, auth headers, in lists too
        if found:
            raise ValueError(
                f"storage_options {'; '.join(found)}: that would put a credential into Dagster's run config and UI "
                "(the value is not repeated here); give credentials in storage_secrets (or as dg.EnvVar at the top "
                "level), and URLs (endpoint_url, proxies) without them"
            )
        return options

    @field_validator("base_dir")
    @classmethod
    def _no_credentials_in_base_dir(cls, base_dir: str) -> str:
        reason = url_credentials(base_dir)
        if reason:
            raise ValueError(
                f"base_dir holds a credential ({reason}; the value is not repeated here); give credentials in "
                "storage_secrets"
            )
        return base_dir

    @field_validator("storage_secrets")
    @classmethod
    def _secrets_are_names(cls, secrets: dict[str, str]) -> dict[str, str]:
        for option, name in secrets.items():
            try:
                require_env_var_name(name, f"storage_secrets[{option!r}]")
            except LiteralSecretError as exc:
                raise ValueError(str(exc)) from None
        return secrets

    # --- paths -------------------------------------------------------------------------------
    def resolved_storage_options(self) -> dict[str, Any]:
        """``storage_options`` with ``storage_secrets`` read from the environment."""
        secrets = {
            option: resolve_env_var(name, f"storage_secrets[{option!r}]")
            for option, name in self.storage_secrets.items()
        }
        return {**self.storage_options, **secrets}

    def secret_values(self) -> list[str]:
        """Values of the storage secrets, so messages can be redacted."""
        return env_values(self.storage_secrets.values())

    @property
    def root(self) -> UPath:
        """``base_dir`` as a path object."""
        options = self.resolved_storage_options() if self.storage_secrets else dict(self.storage_options)
        if self.protocol in OBJECT_STORES:
            # Other processes and machines write here: a cached listing would hide their stages and partitions.
            # (fsspec still reuses one client per process for the same options: creating one costs ~0.1 s.)
            options.setdefault("use_listings_cache", False)
        return UPath(self.base_dir, **options)

    @property
    def protocol(self) -> str:
        """The fsspec protocol of ``base_dir`` (``""`` for a local path)."""
        return UPath(self.base_dir).protocol

    @property
    def is_local(self) -> bool:
        """True when ``base_dir`` is on the local file system."""
        return UPath(self.base_dir).protocol in ("", "file", "local")

    def stage_dir(self, workflow: str, stage: str, partition: str | None = None) -> UPath:
        """``<base_dir>/<workflow>/<stage>``, or ``<...>/<stage>/partitions/<key>`` for one partition."""
        path = self.root / workflow / stage
        return path / PARTITIONS_DIR / partition_dir_name(partition) if partition is not None else path

    def work_root(self, workflow: str, stage: str, partition: str | None = None) -> Path:
        """The local directory holding a stage's work directories.

        For a URL ``base_dir`` it lives under ``local_work_dir`` in a folder keyed by the ``base_dir`` (and the
        endpoint), so two buckets with the same workflow never share or clean up each other's work.
        """
        if self.is_local:
            return Path(self.stage_dir(workflow, stage, partition).path) / STAGING_DIR
        base = Path(self.local_work_dir or Path(tempfile.gettempdir()) / "dd_assets_work")
        folder = base / self.base_dir_key() / workflow / stage
        return folder / PARTITIONS_DIR / partition_dir_name(partition) if partition is not None else folder

    def base_dir_key(self) -> str:
        """A short stable name for ``base_dir`` (and its endpoint), for local folders that belong to it."""
        endpoint = self.storage_options.get("endpoint_url") or (self.storage_options.get("client_kwargs") or {}).get(
            "endpoint_url"
        )
        return hashlib.sha256(f"{self.base_dir}|{endpoint or ''}".encode()).hexdigest()[:12]

    def work_dir(self, workflow: str, stage: str, key: str, partition: str | None = None) -> Path:
        """The local directory a stage run generates into; keyed so that a rerun of the same work resumes."""
        return self.work_root(workflow, stage, partition) / key

    def lock_path(self, workflow: str, stage: str, partition: str | None = None) -> Path:
        """The local file whose lock makes one run at a time write a stage (or one partition of it)."""
        if self.is_local:
            return Path(self.stage_dir(workflow, stage, partition).path) / LOCK_FILE
        return self.work_root(workflow, stage, partition) / LOCK_FILE

    def stage_lock(
        self, workflow: str, stage: str, run_id: str, *, reader: bool = False, partition: str | None = None
    ) -> StageLock:
        """The writer lock of a stage (not yet taken): use it as a context manager around the whole run.

        ``reader=True`` gives the brief lock a reader takes to check the stage (it never makes a writer fail).
        """
        owner = {"run": run_id, "pid": os.getpid(), "host": socket.gethostname()}
        timeout_s = 0 if reader else self.lock_timeout_s
        what = describe(workflow, stage, partition)
        local = StageLock(
            self.lock_path(workflow, stage, partition), owner=owner, timeout_s=timeout_s, what=what, reader=reader
        )
        if self.protocol not in ("s3", "s3a"):
            return local  # local base_dir; other object stores: one machine (see docs/scale.md)
        from dd_assets.storage.object_store_lock import ObjectStoreLock

        return ObjectStoreLock(
            local,
            self.stage_dir(workflow, stage, partition) / LOCK_FILE,
            owner=owner,
            timeout_s=timeout_s,
            what=what,
            reader=reader,
            lease_s=self.lock_lease_s,
        )

    # --- reading -----------------------------------------------------------------------------
    def read_record(self, workflow: str, stage: str, partition: str | None = None) -> dict[str, Any] | None:
        """The published ``stage.json`` of a stage (or partition), or ``None`` when it was never published.

        Raises :class:`StageRecordUnreadableError` when the record is not valid JSON with a file list.
        """
        return self._read_record_at(
            self.stage_dir(workflow, stage, partition) / STAGE_RECORD, describe(workflow, stage, partition)
        )

    def _read_record_at(
        self, path: UPath, where: str, absent: tuple[type[OSError], ...] = (FileNotFoundError,)
    ) -> dict[str, Any] | None:
        """The stage record at ``path`` (``None`` when reading it raises one of ``absent``); see read_record."""
        try:
            data = path.read_bytes()
        except absent:
            return None
        except OSError as exc:
            raise StageStorageError(f"{where}: cannot read {path}: {exc}") from None
        return self._parse_record(data, path, where)

    def _parse_record(self, data: bytes, path: UPath, where: str) -> dict[str, Any]:
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

    def set_aside_unreadable_record(self, workflow: str, stage: str, partition: str | None = None) -> UPath:
        """Move an unreadable ``stage.json`` to ``stage.json.unreadable-<time>`` (kept for inspection)."""
        stage_dir = self.stage_dir(workflow, stage, partition)
        target = stage_dir / f"{STAGE_RECORD}.unreadable-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
        source = stage_dir / STAGE_RECORD
        if self.is_local:
            os.replace(source.path, target.path)
        else:
            source.fs.mv(source.path, target.path)
        return target

    def read_stage(
        self,
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
            return self._read_one(workflow, stage, None)
        if partitions_def is STORED:
            current = self.stored_partitioning(workflow, stage)
            if current is None:  # published before storage recorded its partitioning
                return self._read_legacy(workflow, stage, partition_key, partition_keys)
            wanted = current.get("partitioning")
            if wanted is None:
                if partition_key is not None or partition_keys is not None:
                    raise StageStorageError(
                        f"{where}: the stage was last published unpartitioned; its partitions are from an earlier "
                        "partitioning and are not read"
                    )
                return self._read_one(workflow, stage, None)
            known = current.get("keys")
        else:
            wanted, known = partitioning_id(partitions_def), definition_keys(partitions_def)
            partition_keys = partition_keys if partition_keys is not None or partition_key is not None else known
        if partition_key is not None:
            record = self.read_record(workflow, stage, partition_key)
            if record is not None and not _of_partitioning(record, wanted, known):
                raise StageStorageError(
                    f"{describe(workflow, stage, partition_key)}: published under an earlier partitioning of the "
                    "stage, so it is stale; rematerialize the partition"
                )
            return self._read_one(workflow, stage, partition_key, record)
        if partition_keys is not None:
            records = {key: self.read_record(workflow, stage, key) for key in partition_keys}
            stale = [key for key, r in records.items() if r is not None and not _of_partitioning(r, wanted, known)]
            if stale:
                raise StageStorageError(
                    f"{where}: partition(s) {', '.join(map(repr, stale))} were published under an earlier "
                    "partitioning of the stage, so they are stale; rematerialize them (or backfill the stage) "
                    "before reading the whole stage"
                )
        else:
            stored = self._stored_partition_records(workflow, stage)
            records = {key: r for key, r in stored.items() if _of_partitioning(r, wanted, known)}
        return self._combine(workflow, stage, records)

    def _read_legacy(
        self, workflow: str, stage: str, partition_key: str | None, partition_keys: list[str] | None
    ) -> StageDataset:
        """A stage whose storage does not record its partitioning: the stage itself, else what partitions are there."""
        if partition_key is not None:
            return self._read_one(workflow, stage, partition_key)
        if partition_keys is None and (self.stage_dir(workflow, stage) / STAGE_RECORD).exists():
            return self._read_one(workflow, stage, None)
        if partition_keys is not None:
            records = {key: self.read_record(workflow, stage, key) for key in partition_keys}
        else:
            records = self._stored_partition_records(workflow, stage)
        return self._combine(workflow, stage, records)

    def _combine(self, workflow: str, stage: str, records: dict[str, dict[str, Any] | None]) -> StageDataset:
        """The partitions of ``records`` (key -> record, ``None`` when unpublished) as one dataset."""
        if not records:
            raise StageStorageError(
                f"{describe(workflow, stage)}: no published output at {self.stage_dir(workflow, stage)}; "
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
        parts = [self._read_one(workflow, stage, key, record) for key, record in records.items()]
        try:
            return StageDataset.combine(parts, self.stage_dir(workflow, stage))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise StageStorageError(
                f"{describe(workflow, stage)}: the schemas of partitions {', '.join(map(repr, records))} do not "
                f"combine ({exc}); rematerialize the partitions whose columns changed type"
            ) from None

    def stored_partitioning(self, workflow: str, stage: str) -> dict[str, Any] | None:
        """The stage's ``partitioning.json``: the partitioning it was last published under (``partitioning``: an id,
        ``None`` when unpublished partitioned; ``keys`` when known), or ``None`` when storage predates it."""
        path = self.stage_dir(workflow, stage) / PARTITIONING_RECORD
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StageStorageError(f"{describe(workflow, stage)}: cannot read {path}: {exc}") from None
        try:
            current = json.loads(data.decode("utf-8"))
            if not isinstance(current, dict) or not isinstance(current.get("partitioning"), str | None):
                raise ValueError("not a partitioning record")
        except ValueError as exc:
            raise StageRecordUnreadableError(
                f"{describe(workflow, stage)}: {path} is unreadable ({exc}); rematerialize the stage to repair it"
            ) from None
        return current

    def stored_partitions(self, workflow: str, stage: str) -> list[str]:
        """The keys of a partitioned stage's published partitions, in key order (as stored in their records)."""
        return list(self._stored_partition_records(workflow, stage))

    def _stored_partition_records(self, workflow: str, stage: str) -> dict[str, dict[str, Any]]:
        """Key -> record of every published partition of a stage, in key order, each read once."""
        folder = self.stage_dir(workflow, stage) / PARTITIONS_DIR
        if not folder.exists():
            return {}
        records = {}
        for child in folder.iterdir():
            where = f"{describe(workflow, stage)}, partition folder {child.name!r}"
            record = self._read_record_at(child / STAGE_RECORD, where, (FileNotFoundError, NotADirectoryError))
            if record is not None:
                key = record.get("partition")
                records[key if isinstance(key, str) else child.name] = record
        return dict(sorted(records.items()))

    def _read_one(
        self, workflow: str, stage: str, partition: str | None, record: dict[str, Any] | None = None
    ) -> StageDataset:
        """One stage or partition as a dataset (``record``: its ``stage.json``, when the caller has read it)."""
        where = describe(workflow, stage, partition)
        if record is None:
            record = self.read_record(workflow, stage, partition)
        stage_dir = self.stage_dir(workflow, stage, partition)
        if record is None:
            raise StageStorageError(f"{where}: no published output at {stage_dir}; materialize it first")
        files = [stage_dir / name for name in record["files"]]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise StageStorageError(
                f"{where}: published files are missing ({', '.join(missing)}); rematerialize the stage"
            )
        try:
            return StageDataset.from_files(
                self.version_dir(workflow, stage, record, partition),
                files,
                status=record.get("status", "completed"),
                record=record,
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise StageStorageError(f"{where}: the published files' schemas do not combine ({exc})") from None

    def version_dir(self, workflow: str, stage: str, record: dict[str, Any], partition: str | None = None) -> UPath:
        """The folder holding exactly the files of ``record`` (what ``dagster/uri`` points at)."""
        files = record.get("files") or []
        folders = {str(Path(name).parent) for name in files}
        folder = folders.pop() if len(folders) == 1 else f"{VERSIONS_DIR}/{record.get('version', '')}"
        return self.stage_dir(workflow, stage, partition) / folder

    # --- dagster hooks -------------------------------------------------------------------------
    def handle_output(self, context: dg.OutputContext, obj: StageOutput) -> None:
        if not isinstance(obj, StageOutput):
            raise StageStorageError(
                f"{context.asset_key.to_user_string()}: dd_stage_io_manager stores Data Designer stages only, "
                f"got {type(obj).__name__}"
            )
        self.publish(obj)

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        workflow, stage = stage_of(upstream.asset_key, upstream.definition_metadata)
        from dd_assets.storage.dagster_agreement import reconcile_if_idle

        if context.has_asset_partitions:  # the upstream partitions this run reads, in the definition's key order
            wanted = set(context.asset_partition_keys)
            every = context.asset_partitions_def.get_partition_keys(dynamic_partitions_store=context.instance)
            keys = [key for key in every if key in wanted] + sorted(wanted - set(every))
            for key in keys:
                reconcile_if_idle(self, workflow, stage, upstream.asset_key, context.instance, context.log, key)
            dataset = self.read_stage(
                workflow,
                stage,
                keys[0] if len(keys) == 1 else None,
                partition_keys=keys,
                partitions_def=context.asset_partitions_def,
            )
        else:
            reconcile_if_idle(self, workflow, stage, upstream.asset_key, context.instance, context.log)
            try:  # None: the upstream is not partitioned, so its own output is read (never an old partitioning's)
                upstream_partitions = context.asset_partitions_def
            except dg.DagsterInvariantViolationError:
                upstream_partitions = None
            dataset = self.read_stage(workflow, stage, partitions_def=upstream_partitions)
        wanted = context.dagster_type.typing_type if context.dagster_type else None
        if wanted is pa.Table:
            return dataset.to_arrow()
        if getattr(wanted, "__name__", None) == "DataFrame" and getattr(wanted, "__module__", "").startswith("pandas"):
            return dataset.to_pandas()
        return dataset

    # --- publishing --------------------------------------------------------------------------
    def publish(self, output: StageOutput) -> dict[str, Any]:
        """Publish a finished stage: new version folder, lock check, ``stage.json`` (the commit), then tidy up.

        The caller holds ``output.lock`` for the whole call (and releases it). Returns the committed record.
        """
        workflow, stage, partition = output.workflow, output.stage, output.partition
        stage_dir = self.stage_dir(workflow, stage, partition)
        version_folder = f"{VERSIONS_DIR}/{output.version}"
        previous, seen = self._read_record_to_replace(stage_dir, describe(workflow, stage, partition))
        names: list[str] = []
        try:
            # the folders a commit supersedes are those there before it: a folder written after belongs to a
            # writer this commit does not know (and that writer's own commit will fail, see _write_record)
            superseded = self._version_folders(stage_dir) - {output.version, (previous or {}).get("version")}
            for index, source in enumerate(output.files):
                name = f"{version_folder}/part-{index:05d}.parquet"
                self._put_file(source, stage_dir / name, link=_is_within(source, output.work_dir))
                names.append(name)
            self._make_durable([stage_dir / n for n in names], stage_dir / version_folder)
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
            self._record_partitioning(workflow, stage, output)
            self._write_record(stage_dir, record, replaces=seen)
        except Exception as exc:  # noqa: BLE001 - whatever the store raised, take back what this attempt wrote
            self._remove_tree(stage_dir / version_folder)
            reason = redact(str(exc), self.secret_values())
            raise StageStorageError(
                f"{describe(workflow, stage, partition)}: publishing to {stage_dir} failed ({reason}); "
                "the previous output is unchanged"
            ) from None

        # Committed. What follows points the `data` link at the new version, replaces informational artifacts
        # and frees space; a failure here is logged, never raised: the new output is already published.
        self._after_commit(workflow, stage, output, record)
        return record

    def _record_partitioning(self, workflow: str, stage: str, output: StageOutput) -> None:
        """Before a commit: make ``partitioning.json`` name the partitioning it is made under, so whole-stage
        reads switch to it (and never mix in partitions, or the unpartitioned output, of an earlier one)."""
        if output.partition is not None and output.partitions_def is None:
            return  # a partition published without its definition: storage cannot say more
        try:
            current = self.stored_partitioning(workflow, stage)
        except StageRecordUnreadableError:
            current = {"partitioning": "unreadable"}
        if output.partitions_def is None:
            if current is None or current.get("partitioning") is None:
                return  # an unpartitioned stage that never was partitioned here: nothing to record
            wanted = {"partitioning": None}
        else:
            wanted = {
                "partitioning": partitioning_id(output.partitions_def),
                "keys": definition_keys(output.partitions_def),
                "definition": str(output.partitions_def),
            }
        if current != wanted:
            self._write_json(self.stage_dir(workflow, stage), PARTITIONING_RECORD, wanted)

    def _after_commit(self, workflow: str, stage: str, output: StageOutput, record: dict[str, Any]) -> None:
        stage_dir = self.stage_dir(workflow, stage, output.partition)
        keep = {record["version"], (record.get("previous") or {}).get("version")}
        superseded = set(record.get("superseded") or ())
        steps = [
            ("pointing data/ at the new version", lambda: self._point_data_link(stage_dir, record["version"])),
            ("replacing artifacts", lambda: self._replace_artifacts(stage_dir, output.artifacts_dir)),
            ("removing old versions", lambda: self._prune_versions(stage_dir, superseded - keep)),
            ("removing work directories", lambda: self._remove_work(output)),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001
                logger.warning(
                    "%s: published, but %s failed: %s", describe(workflow, stage, output.partition), what, exc
                )
                if step is steps[0][1]:
                    keep.add(self._data_link_target(stage_dir))  # data/ still names an older version: keep it

    def _point_data_link(self, stage_dir: UPath, version: str) -> None:
        if not self.is_local:
            return  # object stores have no atomic folder switch: readers follow stage.json or dagster/uri
        stage_path = Path(stage_dir.path)
        data = stage_path / DATA_DIR
        if data.is_dir() and not data.is_symlink():  # the layout before versions/: retire the old folder
            os.replace(data, stage_path / VERSIONS_DIR / f"legacy-{uuid.uuid4().hex[:8]}")
        tmp = stage_path / f".{DATA_DIR}-{uuid.uuid4().hex}"
        os.symlink(f"{VERSIONS_DIR}/{version}", tmp)
        os.replace(tmp, data)

    def repair_data_link(
        self, workflow: str, stage: str, partition: str | None = None, record: dict[str, Any] | None = None
    ) -> str | None:
        """Point ``data`` at the committed version when a run died between its commit and the link switch
        (local base_dir; call it holding the stage's lock). Returns a message when it changed the link."""
        if not self.is_local:
            return None
        record = record if record is not None else self.read_record(workflow, stage, partition)
        version = (record or {}).get("version")
        stage_dir = self.stage_dir(workflow, stage, partition)
        if not isinstance(version, str) or not (Path(stage_dir.path) / VERSIONS_DIR / version).is_dir():
            return None  # nothing committed here, or a record from before versions/: nothing to point at
        before = self._data_link_target(stage_dir)
        if before == version:
            return None
        self._point_data_link(stage_dir, version)
        return (
            f"{describe(workflow, stage, partition)}: data/ pointed at {before or 'nothing'} while stage.json names "
            f"version {version} (a run died between its commit and the link switch); pointed it at {version}"
        )

    def _data_link_target(self, stage_dir: UPath) -> str | None:
        """The version folder ``data`` points at (local base_dir), or ``None``."""
        data = Path(stage_dir.path) / DATA_DIR if self.is_local else None
        return Path(os.readlink(data)).name if data is not None and data.is_symlink() else None

    def _version_folders(self, stage_dir: UPath) -> set[str]:
        versions = stage_dir / VERSIONS_DIR
        return {folder.name for folder in versions.iterdir()} if versions.exists() else set()

    def _prune_versions(self, stage_dir: UPath, superseded: set[str]) -> None:
        """Remove the version folders the committed record lists as superseded (never one it did not see)."""
        superseded = superseded - {self._data_link_target(stage_dir)}  # never the folder readers are pointed at
        for name in sorted(superseded):
            self._remove_tree(stage_dir / VERSIONS_DIR / name)
        for legacy in (stage_dir / LEGACY_PREVIOUS_DIR,):
            if legacy.exists():
                self._remove_tree(legacy)
        if self.is_local:
            for stray in Path(stage_dir.path).glob(f".{DATA_DIR}-*"):
                stray.unlink(missing_ok=True)

    def _remove_work(self, output: StageOutput) -> None:
        # This run holds the stage lock, so no other run is using the stage's work directories: the published
        # work, and any left by interrupted runs of other work (another config or upstream), are superseded.
        root = output.work_dir.parent
        if root.is_dir():
            for leftover in root.iterdir():
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
        for path in output.extra_cleanup:
            shutil.rmtree(path, ignore_errors=True)
        if not self.is_local:  # the checkpoints other machines would have resumed from are superseded too
            from dd_assets.storage.layout import CHECKPOINTS_DIR, remove_checkpoints

            output.lock.check_held()  # a writer that lost its lease must not delete the next writer's checkpoints
            remove_checkpoints(self.stage_dir(output.workflow, output.stage, output.partition) / CHECKPOINTS_DIR)

    def _remove_tree(self, path: UPath) -> None:
        try:
            if self.is_local:
                shutil.rmtree(path.path, ignore_errors=True)
            elif path.exists():
                path.fs.rm(path.path, recursive=True)
        except OSError as exc:
            logger.warning("could not remove %s: %s", path, exc)

    def _put_file(self, source: Path, target: UPath, *, link: bool) -> None:
        if self.is_local:
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

    def _make_durable(self, files: list[UPath], folder: UPath) -> None:
        """Flush the new files and their folder to disk before the commit names them (local base_dir)."""
        if not self.is_local:
            return  # an object PUT is durable when it returns
        for path in [*files, folder]:
            fd = os.open(path.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @property
    def _fenced(self) -> bool:
        """True when the commit is a conditional write (S3: ``If-Match`` / ``If-None-Match``)."""
        return self.protocol in ("s3", "s3a")

    def _read_record_to_replace(self, stage_dir: UPath, where: str) -> tuple[dict[str, Any] | None, str | None]:
        """The record a publish replaces (``None``: none, or unreadable) and, on S3, the ETag it was read with."""
        path = stage_dir / STAGE_RECORD
        if not self._fenced:
            try:
                return self._read_record_at(path, where), None
            except StageRecordUnreadableError:
                return None, None
        from dd_assets.storage.object_store_lock import read_with_etag

        try:
            found = read_with_etag(path)
        except OSError as exc:
            raise StageStorageError(f"{where}: cannot read {path}: {exc}") from None
        if found is None:
            return None, None
        try:
            return self._parse_record(found[0], path, where), found[1]
        except StageRecordUnreadableError:
            return None, found[1]

    def _write_record(self, stage_dir: UPath, record: dict[str, Any], replaces: str | None = None) -> None:
        """Write ``stage.json`` (the commit). On S3 only if the record there is still the one read with ETag
        ``replaces`` (``None``: only if there is none), else :class:`CommitConflictError`."""
        self._write_json(stage_dir, STAGE_RECORD, record, fenced=True, replaces=replaces)

    def _write_json(
        self, stage_dir: UPath, name: str, record: dict[str, Any], *, fenced: bool = False, replaces: str | None = None
    ) -> None:
        """Replace ``stage_dir/name`` in one step (a durable rename locally, one PUT on an object store; with
        ``fenced`` on S3, a conditional PUT, see :meth:`_write_record`)."""
        text = json.dumps(record, indent=2, sort_keys=True, default=str)
        target = stage_dir / name
        if self.is_local:
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
        elif fenced and self._fenced:
            from dd_assets.storage.object_store_lock import CommitConflictError, put_if

            try:
                put_if(target, text.encode(), replaces)  # one object PUT: atomic, and fenced
            except CommitConflictError as exc:
                raise CommitConflictError(
                    f"{exc}: another run committed the stage after this run started publishing (this run's lease "
                    "expired while it was paused), so this run published nothing"
                ) from None
        else:
            target.write_text(text)  # one object PUT: atomic on object stores

    def _replace_artifacts(self, stage_dir: UPath, artifacts: Path | None) -> None:
        if artifacts is None or not artifacts.exists():
            return
        target = stage_dir / ARTIFACTS_DIR
        if self.is_local:
            trash = Path(stage_dir.path) / STAGING_DIR / f"old-artifacts-{uuid.uuid4().hex}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            if Path(target.path).exists():
                os.replace(target.path, trash)
            try:
                os.replace(artifacts, target.path)
            except OSError:
                if trash.exists() and not Path(target.path).exists():
                    os.replace(trash, target.path)  # put the old artifacts back
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            # Object stores have no folder rename: replace the informational artifacts in place (the commit,
            # stage.json, is already written; a failure here is logged and the next publish replaces them).
            self._remove_tree(target)
            target.fs.put(str(artifacts), target.path, recursive=True)

    # --- agreement with Dagster (dd_assets/dagster_agreement.py) ------------------------------
    def reconcile(
        self,
        workflow: str,
        stage: str,
        asset_key: dg.AssetKey,
        instance: dg.DagsterInstance,
        lock: StageLock | None = None,
        partition: str | None = None,
    ) -> str | None:
        """Make Dagster agree with storage after a run died while writing the stage (call it holding ``lock``).

        See :func:`dd_assets.storage.dagster_agreement.reconcile`.
        """
        from dd_assets.storage.dagster_agreement import reconcile

        return reconcile(self, workflow, stage, asset_key, instance, lock, partition)


def stage_of(asset_key: dg.AssetKey, definition_metadata: Any = None) -> tuple[str, str]:
    """``(workflow, stage)`` of a stage asset: from its definition metadata, else from a ``[workflow, stage]`` key."""
    metadata = definition_metadata or {}
    workflow, stage = metadata.get("dd_assets/workflow"), metadata.get("dd_assets/stage")
    workflow = getattr(workflow, "value", workflow)
    stage = getattr(stage, "value", stage)
    if isinstance(workflow, str) and isinstance(stage, str):
        return workflow, stage
    if len(asset_key.path) != 2:
        raise StageStorageError(
            f"{asset_key.to_user_string()}: not a dd_assets stage (expected dd_assets/workflow and dd_assets/stage "
            "metadata, or a [workflow, stage] key)"
        )
    return asset_key.path[0], asset_key.path[1]


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


def _of_partitioning(record: dict[str, Any], wanted: str | None, keys: list[str] | None) -> bool:
    """Whether a partition's record belongs to the partitioning ``wanted``. A record written before records named
    their partitioning counts when its key is one of ``keys`` (or they are unknown): it cannot be told apart."""
    if "partitioning" in record:
        return record["partitioning"] == wanted
    return keys is None or record.get("partition") in keys
