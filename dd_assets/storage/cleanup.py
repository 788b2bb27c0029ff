"""After a commit: point ``data`` at the new version, swap in the artifacts, free the space of what it superseded.

Nothing here is a commit: a failure is logged, never raised (the new output is already published), and whatever
is left is tidied by the next publish; a ``data`` link a run left behind its commit is repaired by the next run.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from upath import UPath

from dd_assets.storage.layout import (
    ARTIFACTS_DIR,
    CHECKPOINTS_DIR,
    DATA_DIR,
    STAGING_DIR,
    VERSIONS_DIR,
    describe,
    remove_checkpoints,
    version_folder,
)

if TYPE_CHECKING:
    from dd_assets.storage.publish import StageOutput
    from dd_assets.storage.stage_store import StageStore

logger = logging.getLogger(__name__)


def after_commit(store: StageStore, output: StageOutput, record: dict[str, Any]) -> None:
    """Every step that follows the commit of ``record``; a step that fails is logged and the others still run."""
    stage_dir = store.stage_dir(output.workflow, output.stage, output.partition)
    keep = {record["version"], (record.get("previous") or {}).get("version")}
    superseded = set(record.get("superseded") or ())
    steps = [
        ("pointing data/ at the new version", lambda: point_data_link(store, stage_dir, record["version"])),
        ("replacing artifacts", lambda: _replace_artifacts(store, stage_dir, output.artifacts_dir)),
        ("removing old versions", lambda: _prune_versions(store, stage_dir, superseded - keep)),
        ("removing work directories", lambda: _remove_work(store, output)),
    ]
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001
            where = describe(output.workflow, output.stage, output.partition)
            logger.warning("%s: published, but %s failed: %s", where, what, exc)
            if step is steps[0][1]:
                keep.add(data_link_target(store, stage_dir))  # data/ still names an older version: keep it


def point_data_link(store: StageStore, stage_dir: UPath, version: str) -> None:
    """Switch ``data`` to ``versions/<version>`` in one rename (local base_dir)."""
    if not store.is_local:
        return  # object stores have no atomic folder switch: readers follow stage.json or dagster/uri
    stage_path = Path(stage_dir.path)
    if (stage_path / DATA_DIR).is_dir() and not (stage_path / DATA_DIR).is_symlink():
        raise OSError(
            f"{stage_path / DATA_DIR} is a folder, not the link to {VERSIONS_DIR}/<version> that readers of a local "
            f"base_dir follow (a folder written by an older layout); move it away and the next run points it at "
            f"{version_folder(version)}"
        )
    tmp = stage_path / f".{DATA_DIR}-{uuid.uuid4().hex}"
    os.symlink(version_folder(version), tmp)
    os.replace(tmp, stage_path / DATA_DIR)


def repair_data_link(store: StageStore, stage_dir: UPath, where: str, record: dict[str, Any] | None) -> str | None:
    """Point ``data`` at the version ``record`` commits when a run died between its commit and the link switch
    (local base_dir; call it holding the stage's lock). Returns a message when it changed the link."""
    if not store.is_local:
        return None
    version = (record or {}).get("version")
    if not isinstance(version, str) or not (Path(stage_dir.path) / VERSIONS_DIR / version).is_dir():
        return None  # nothing committed here, or its version folder is gone: nothing to point at
    before = data_link_target(store, stage_dir)
    if before == version:
        return None
    point_data_link(store, stage_dir, version)
    return (
        f"{where}: data/ pointed at {before or 'nothing'} while stage.json names "
        f"version {version} (a run died between its commit and the link switch); pointed it at {version}"
    )


def data_link_target(store: StageStore, stage_dir: UPath) -> str | None:
    """The version folder ``data`` points at (local base_dir), or ``None``."""
    data = Path(stage_dir.path) / DATA_DIR if store.is_local else None
    return Path(os.readlink(data)).name if data is not None and data.is_symlink() else None


def version_folders(stage_dir: UPath) -> set[str]:
    """The names of the version folders in ``stage_dir/versions``."""
    versions = stage_dir / VERSIONS_DIR
    return {folder.name for folder in versions.iterdir()} if versions.exists() else set()


def _prune_versions(store: StageStore, stage_dir: UPath, superseded: set[str]) -> None:
    """Remove the version folders the committed record lists as superseded (never one it did not see)."""
    superseded = superseded - {data_link_target(store, stage_dir)}  # never the folder readers are pointed at
    for name in sorted(superseded):
        remove_tree(store, stage_dir / VERSIONS_DIR / name)
    if store.is_local:
        for stray in Path(stage_dir.path).glob(f".{DATA_DIR}-*"):
            stray.unlink(missing_ok=True)


def _remove_work(store: StageStore, output: StageOutput) -> None:
    # This run holds the stage lock, so no other run is using the stage's work directories: the published
    # work, and any left by interrupted runs of other work (another config or upstream), are superseded.
    root = output.work_dir.parent
    if root.is_dir():
        for leftover in root.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
    for path in output.extra_cleanup:
        shutil.rmtree(path, ignore_errors=True)
    if not store.is_local:  # the checkpoints other machines would have resumed from are superseded too
        output.lock.check_held()  # a writer that lost its lease must not delete the next writer's checkpoints
        remove_checkpoints(store.stage_dir(output.workflow, output.stage, output.partition) / CHECKPOINTS_DIR)


def remove_tree(store: StageStore, path: UPath) -> None:
    """Remove a folder of the store, logging (not raising) a failure."""
    try:
        if store.is_local:
            shutil.rmtree(path.path, ignore_errors=True)
        elif path.exists():
            path.fs.rm(path.path, recursive=True)
    except OSError as exc:
        logger.warning("could not remove %s: %s", path, exc)


def _replace_artifacts(store: StageStore, stage_dir: UPath, artifacts: Path | None) -> None:
    if artifacts is None or not artifacts.exists():
        return
    target = stage_dir / ARTIFACTS_DIR
    if store.is_local:
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
        remove_tree(store, target)
        target.fs.put(str(artifacts), target.path, recursive=True)
