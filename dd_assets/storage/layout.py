"""The layout of published stages: the names of every folder and file a stage's storage holds.

Layout (public)::

    <base_dir>/<workflow>/<stage>/stage.json                 the commit: status, versions, counts, files
    <base_dir>/<workflow>/<stage>/versions/<version>/*.parquet  each published version, never changed
    <base_dir>/<workflow>/<stage>/data -> versions/<version>  (local base_dir) the current version
    <base_dir>/<workflow>/<stage>/artifacts/                 Data Designer's artifact directory
    <base_dir>/<workflow>/<stage>/partitions/<key>/          a partitioned stage: the same layout per partition
    <base_dir>/<workflow>/<stage>/partitioning.json          the partitioning whole-stage reads use
    <base_dir>/<workflow>/<stage>/.lock                      (local base_dir, or the lease on S3) the writer lock
    <base_dir>/<workflow>/<stage>/.staging/<key>/            (local base_dir) the work directories of runs
    <base_dir>/<workflow>/<stage>/.work/<key>/               (URL base_dir) checkpoints of a run that generates
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from upath import UPath

STAGE_RECORD = "stage.json"
DATA_DIR = "data"
VERSIONS_DIR = "versions"
ARTIFACTS_DIR = "artifacts"
STAGING_DIR = ".staging"
LOCK_FILE = ".lock"
PARTITIONS_DIR = "partitions"
PARTITIONING_RECORD = "partitioning.json"
CHECKPOINTS_DIR = ".work"

MAX_FOLDER_NAME = 255  # bytes: the longest file name local file systems accept

PathT = TypeVar("PathT", Path, UPath)


def stage_path(root: PathT, workflow: str, stage: str, partition: str | None = None) -> PathT:
    """``<root>/<workflow>/<stage>``, or ``<...>/<stage>/partitions/<key>`` for one partition."""
    path = root / workflow / stage
    return path / PARTITIONS_DIR / partition_dir_name(partition) if partition is not None else path


def version_folder(version: str) -> str:
    """``versions/<version>``: where, inside a stage's folder, one published version's files are."""
    return f"{VERSIONS_DIR}/{version}"


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


def describe(workflow: str, stage: str, partition: str | None = None) -> str:
    """``workflow 'w', stage 's'`` (and ``, partition 'k'``): how messages name a stage or one partition."""
    where = f"workflow {workflow!r}, stage {stage!r}"
    return f"{where}, partition {partition!r}" if partition is not None else where


def remove_checkpoints(path: UPath) -> None:
    """Delete a checkpoint folder (or a stage's whole ``.work`` folder); missing is fine."""
    try:
        if path.exists():
            path.fs.rm(path.path, recursive=True)
    except FileNotFoundError:
        pass
