"""StageStore: the published stages under one ``base_dir`` (local or an fsspec URL), with no Dagster context.

It names where a stage's files are (:mod:`dd_assets.storage.layout`), gives the writer lock of a stage, reads its
records and its output (:mod:`dd_assets.storage.stage_reads`) and publishes a finished run
(:mod:`dd_assets.storage.publish`). :class:`~dd_assets.storage.io_manager.StageParquetIOManager` is its Dagster face.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from upath import UPath

from dd_assets.spec.secrets import env_values, resolve_env_var
from dd_assets.storage import cleanup, stage_reads
from dd_assets.storage import publish as publishing
from dd_assets.storage.layout import (
    LOCK_FILE,
    PARTITIONING_RECORD,
    STAGE_RECORD,
    STAGING_DIR,
    describe,
    stage_path,
)
from dd_assets.storage.publish import StageOutput
from dd_assets.storage.records import read_partitioning_record, read_record_at
from dd_assets.storage.stage_lock import StageLock

OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


@dataclass(frozen=True)
class StageStore:
    """The stages stored in ``<base_dir>/<workflow>/<stage>/`` (the settings are the IO manager's fields)."""

    base_dir: str = "data"
    storage_options: dict[str, Any] = field(default_factory=dict)
    storage_secrets: dict[str, str] = field(default_factory=dict)
    local_work_dir: str | None = None
    lock_timeout_s: float = 0.0
    lock_lease_s: float = 60.0

    # --- where ---------------------------------------------------------------------------------
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
        return self.protocol in ("", "file", "local")

    @property
    def conditional_commits(self) -> bool:
        """True when locks are leases and the commit is a conditional write (S3: ``If-Match`` / ``If-None-Match``)."""
        return self.protocol in ("s3", "s3a")

    def stage_dir(self, workflow: str, stage: str, partition: str | None = None) -> UPath:
        """``<base_dir>/<workflow>/<stage>``, or ``<...>/<stage>/partitions/<key>`` for one partition."""
        return stage_path(self.root, workflow, stage, partition)

    def work_root(self, workflow: str, stage: str, partition: str | None = None) -> Path:
        """The local directory holding a stage's work directories.

        For a URL ``base_dir`` it lives under ``local_work_dir`` in a folder keyed by the ``base_dir`` (and the
        endpoint), so two buckets with the same workflow never share or clean up each other's work.
        """
        if self.is_local:
            return Path(self.stage_dir(workflow, stage, partition).path) / STAGING_DIR
        base = Path(self.local_work_dir or Path(tempfile.gettempdir()) / "dd_assets_work")
        return stage_path(base / self.base_dir_key(), workflow, stage, partition)

    def base_dir_key(self) -> str:
        """A short stable name for ``base_dir`` (and its endpoint), for local folders that belong to it."""
        endpoint = self.storage_options.get("endpoint_url") or (self.storage_options.get("client_kwargs") or {}).get(
            "endpoint_url"
        )
        return hashlib.sha256(f"{self.base_dir}|{endpoint or ''}".encode()).hexdigest()[:12]

    # --- locks ---------------------------------------------------------------------------------
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
        if not self.conditional_commits:
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

    # --- records and reads ---------------------------------------------------------------------
    def read_record(self, workflow: str, stage: str, partition: str | None = None) -> dict[str, Any] | None:
        """The published ``stage.json`` of a stage (or partition), or ``None`` when it was never published.

        Raises :class:`~dd_assets.storage.records.StageRecordUnreadableError` when the record is not valid JSON
        with a file list.
        """
        path = self.stage_dir(workflow, stage, partition) / STAGE_RECORD
        return read_record_at(path, describe(workflow, stage, partition))

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

    def stored_partitioning(self, workflow: str, stage: str) -> dict[str, Any] | None:
        """The stage's ``partitioning.json``: the partitioning it was last published under (``partitioning``: an id,
        ``None`` when unpublished partitioned; ``keys`` when known), or ``None`` when storage does not record it."""
        return read_partitioning_record(
            self.stage_dir(workflow, stage) / PARTITIONING_RECORD, describe(workflow, stage)
        )

    def stored_partitions(self, workflow: str, stage: str) -> list[str]:
        """The keys of a partitioned stage's published partitions, in key order (as stored in their records)."""
        return list(stage_reads.stored_partition_records(self, workflow, stage))

    read_stage = stage_reads.read_stage  # one definition, with the store as ``self``

    # --- writes --------------------------------------------------------------------------------
    def publish(self, output: StageOutput) -> dict[str, Any]:
        """Publish a finished stage (see :func:`dd_assets.storage.publish.publish`); returns the committed record."""
        return publishing.publish(self, output)

    def repair_data_link(
        self, workflow: str, stage: str, partition: str | None = None, record: dict[str, Any] | None = None
    ) -> str | None:
        """Point ``data`` at the committed version when a run died between its commit and the link switch
        (local base_dir; call it holding the stage's lock). Returns a message when it changed the link."""
        if not self.is_local:
            return None
        record = record if record is not None else self.read_record(workflow, stage, partition)
        stage_dir = self.stage_dir(workflow, stage, partition)
        return cleanup.repair_data_link(self, stage_dir, describe(workflow, stage, partition), record)
