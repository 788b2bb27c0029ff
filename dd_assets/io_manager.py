"""StageParquetIOManager: each stage's parquet in its own directory, published atomically.

Layout (public)::

    <base_dir>/<workflow>/<stage>/data/*.parquet   the selected output handed downstream
    <base_dir>/<workflow>/<stage>/artifacts/       Data Designer's artifact directory
    <base_dir>/<workflow>/<stage>/stage.json       status, versions, counts, upstream versions, files

A stage runs in a local work directory (``<stage>/.staging/<key>`` for a local ``base_dir``).
Publishing writes the new parquet files under version-unique names, then replaces ``stage.json``
in one step (the commit point; readers follow its ``files`` list), then swaps in the artifacts and
removes the previous version's files. A run that fails or is killed before the commit leaves the
previous output untouched, and its work directory lets the next run resume.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import Field
from upath import UPath

from dd_assets import stage_lock
from dd_assets.dataset import StageDataset

logger = logging.getLogger(__name__)

STAGE_RECORD = "stage.json"
DATA_DIR = "data"
ARTIFACTS_DIR = "artifacts"
STAGING_DIR = ".staging"
PREVIOUS_DIR = ".previous"
LOCK_FILE = ".lock"


@dataclass
class StageOutput:
    """What a stage run hands to the IO manager to publish."""

    work_dir: Path
    files: list[Path]
    record: dict[str, Any]
    artifacts_dir: Path | None = None
    extra_cleanup: list[Path] = field(default_factory=list)


class StageStorageError(RuntimeError):
    """A stage directory cannot be read or written."""


class StageParquetIOManager(dg.ConfigurableIOManager):
    """Stores every stage in ``<base_dir>/<workflow>/<stage>/`` (IO manager key ``"dd_stage_io_manager"``).

    Attributes:
        base_dir: a local path or an fsspec URL (``s3://bucket/prefix``) read through universal_pathlib.
        storage_options: fsspec options for a URL ``base_dir`` (credentials, endpoint).
        local_work_dir: where stages run before upload when ``base_dir`` is not local (default: a temp dir).
        lock_timeout_s: how long a run waits for another run of the same stage to finish (default: fail at once).
    """

    base_dir: str = "data"
    storage_options: dict[str, Any] = Field(default_factory=dict)
    local_work_dir: str | None = None
    lock_timeout_s: float = 0.0

    # --- paths -------------------------------------------------------------------------------
    @property
    def root(self) -> UPath:
        """``base_dir`` as a path object."""
        return UPath(self.base_dir, **self.storage_options)

    @property
    def is_local(self) -> bool:
        """True when ``base_dir`` is on the local file system."""
        return self.root.protocol in ("", "file", "local")

    def stage_dir(self, workflow: str, stage: str) -> UPath:
        """``<base_dir>/<workflow>/<stage>``."""
        return self.root / workflow / stage

    def work_dir(self, workflow: str, stage: str, key: str) -> Path:
        """The local directory a stage run generates into; keyed so that a rerun of the same work resumes."""
        if self.is_local:
            return Path(self.stage_dir(workflow, stage).path) / STAGING_DIR / key
        base = Path(self.local_work_dir or Path(tempfile.gettempdir()) / "dd_assets_work")
        return base / workflow / stage / key

    def lock_path(self, workflow: str, stage: str) -> Path:
        """The local file whose lock makes one run at a time write a stage."""
        if self.is_local:
            return Path(self.stage_dir(workflow, stage).path) / LOCK_FILE
        return self.work_dir(workflow, stage, "x").parent / LOCK_FILE

    def lock_stage(self, workflow: str, stage: str, run_id: str) -> None:
        """Take the stage's writer lock (released by :meth:`publish` or :meth:`unlock_stage`)."""
        stage_lock.acquire(
            self.lock_path(workflow, stage),
            owner={"run": run_id, "pid": os.getpid()},
            timeout_s=self.lock_timeout_s,
            what=f"workflow {workflow!r}, stage {stage!r}",
        )

    def unlock_stage(self, workflow: str, stage: str) -> None:
        """Release the stage's writer lock if this process holds it."""
        stage_lock.release(self.lock_path(workflow, stage))

    # --- reading -----------------------------------------------------------------------------
    def read_record(self, workflow: str, stage: str) -> dict[str, Any] | None:
        """The published ``stage.json`` of a stage, or ``None`` when it was never published."""
        path = self.stage_dir(workflow, stage) / STAGE_RECORD
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            raise StageStorageError(f"cannot read {path}: {exc}") from exc

    def read_stage(self, workflow: str, stage: str) -> StageDataset:
        """A handle on the published output of a stage."""
        record = self.read_record(workflow, stage)
        stage_dir = self.stage_dir(workflow, stage)
        if record is None:
            raise StageStorageError(
                f"workflow {workflow!r}, stage {stage!r}: no published output at {stage_dir}; materialize it first"
            )
        files = [_current_or_previous(stage_dir, name) for name in record["files"]]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise StageStorageError(
                f"workflow {workflow!r}, stage {stage!r}: published files are missing ({', '.join(missing)}); "
                "rematerialize the stage"
            )
        return StageDataset.from_files(
            stage_dir / DATA_DIR, files, status=record.get("status", "completed"), record=record
        )

    # --- dagster hooks -------------------------------------------------------------------------
    def handle_output(self, context: dg.OutputContext, obj: StageOutput) -> None:
        if not isinstance(obj, StageOutput):
            raise StageStorageError(
                f"{context.asset_key.to_user_string()}: dd_stage_io_manager stores Data Designer stages only, "
                f"got {type(obj).__name__}"
            )
        workflow, stage = _workflow_stage(context.asset_key)
        self.publish(workflow, stage, obj)

    def load_input(self, context: dg.InputContext) -> Any:
        workflow, stage = _workflow_stage(context.upstream_output.asset_key)
        dataset = self.read_stage(workflow, stage)
        wanted = context.dagster_type.typing_type if context.dagster_type else None
        if wanted is pa.Table:
            return dataset.to_arrow()
        if getattr(wanted, "__name__", None) == "DataFrame" and getattr(wanted, "__module__", "").startswith("pandas"):
            return dataset.to_pandas()
        return dataset

    # --- publishing --------------------------------------------------------------------------
    def publish(self, workflow: str, stage: str, output: StageOutput) -> StageDataset:
        """Publish a finished stage: new files, then ``stage.json`` (the commit), then artifacts and cleanup."""
        try:
            return self._publish(workflow, stage, output)
        finally:
            self.unlock_stage(workflow, stage)

    def _publish(self, workflow: str, stage: str, output: StageOutput) -> StageDataset:
        stage_dir = self.stage_dir(workflow, stage)
        data_dir = stage_dir / DATA_DIR
        version = f"{output.record.get('data_version', 'v')[:12]}-{uuid.uuid4().hex[:8]}"
        previous = self.read_record(workflow, stage)
        names: list[str] = []
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            for index, source in enumerate(output.files):
                name = f"{DATA_DIR}/part-{version}-{index:05d}.parquet"
                names.append(name)
                self._put_file(source, stage_dir / name, link=_is_within(source, output.work_dir))
            record = {**output.record, "files": names, "version": version}
            self._write_record(stage_dir, record)
        except OSError as exc:
            for name in names:  # not committed: take back what this attempt wrote
                _remove(stage_dir / name)
            raise StageStorageError(
                f"workflow {workflow!r}, stage {stage!r}: publishing to {stage_dir} failed ({exc}); "
                "the previous output is unchanged"
            ) from exc

        # Committed. What follows replaces informational artifacts and frees space; a failure here is logged,
        # not raised, since the new output is already published. The previous version's files move to
        # .previous/ (readers holding the old stage.json find them there) and the one before goes.
        try:
            if output.artifacts_dir is not None and output.artifacts_dir.exists():
                self._replace_artifacts(stage_dir, output.artifacts_dir)
        except Exception as exc:  # noqa: BLE001
            logger.warning("workflow %r, stage %r: published, but replacing artifacts failed: %s", workflow, stage, exc)
        self._retire(stage_dir, [old for old in (previous or {}).get("files", []) if old not in set(names)])
        shutil.rmtree(output.work_dir, ignore_errors=True)
        # This run holds the stage lock, so no other run is using the stage's work directories: those left by
        # interrupted runs of other work (another config or upstream version) are superseded now.
        staging = output.work_dir.parent
        if staging.is_dir():
            for leftover in staging.iterdir():
                shutil.rmtree(leftover, ignore_errors=True)
        for path in output.extra_cleanup:
            shutil.rmtree(path, ignore_errors=True)
        return StageDataset.from_files(data_dir, [stage_dir / n for n in names], status=record["status"], record=record)

    def _retire(self, stage_dir: UPath, old_files: list[str]) -> None:
        previous_dir = stage_dir / PREVIOUS_DIR
        try:
            if previous_dir.exists():
                for stale in previous_dir.iterdir():
                    _remove(stale)
            if old_files:
                previous_dir.mkdir(parents=True, exist_ok=True)
            for old in old_files:
                source = stage_dir / old
                if self.is_local:
                    try:
                        os.replace(source.path, (previous_dir / source.name).path)
                    except FileNotFoundError:
                        pass
                else:
                    source.fs.mv(source.path, (previous_dir / source.name).path)
        except OSError:
            pass  # space is reclaimed on the next publish; the committed output is complete either way

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

    def _write_record(self, stage_dir: UPath, record: dict[str, Any]) -> None:
        text = json.dumps(record, indent=2, sort_keys=True, default=str)
        target = stage_dir / STAGE_RECORD
        if self.is_local:
            tmp = Path(target.path).with_name(f".{STAGE_RECORD}.{uuid.uuid4().hex}.tmp")
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target.path)
        else:
            target.write_text(text)  # one object PUT: atomic on object stores

    def _replace_artifacts(self, stage_dir: UPath, artifacts: Path) -> None:
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
            # upload beside the old tree first, so a failed upload leaves the old artifacts whole
            incoming = stage_dir / f".artifacts-{uuid.uuid4().hex[:8]}"
            target.fs.put(str(artifacts), incoming.path, recursive=True)
            if target.exists():
                target.fs.rm(target.path, recursive=True)
            target.fs.mv(incoming.path, target.path, recursive=True)


def _workflow_stage(asset_key: dg.AssetKey) -> tuple[str, str]:
    if len(asset_key.path) != 2:
        raise StageStorageError(f"expected a stage asset key [workflow, stage], got {asset_key.to_user_string()}")
    return asset_key.path[0], asset_key.path[1]


def _remove(path: UPath) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _current_or_previous(stage_dir: UPath, name: str) -> UPath:
    """A file of a ``stage.json``; if a publish retired it since that record was read, its ``.previous/`` copy."""
    path = stage_dir / name
    if path.exists():
        return path
    retired = stage_dir / PREVIOUS_DIR / path.name
    return retired if retired.exists() else path


def _is_within(path: Path, parent: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False
