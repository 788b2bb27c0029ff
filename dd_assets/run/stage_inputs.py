"""What a stage run generates from: its upstreams and seed, how many records, and the work directory they key.

The generation inputs (:func:`dd_assets.spec.versioning.generation_inputs`) name the work directory, so a rerun
with the same inputs resumes there and one with other inputs starts afresh (and says why).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from dd_assets.run import resumable_work
from dd_assets.run.seeds import Seed, as_stage_dataset, build_seed, upstream_label
from dd_assets.run.stage_scope import StageScope
from dd_assets.spec.field_rules import check_num_records
from dd_assets.spec.seed_files import RecordCountError, resolve_num_records
from dd_assets.spec.versioning import (
    files_fingerprint,
    generation_inputs,
    generation_work_key,
    own_seed_fingerprint,
    parquet_data_version,
)
from dd_assets.storage.dataset import StageDataset
from dd_assets.storage.lineage import Lineage, MixedVersionsError, merged_lineage, record_lineage


@dataclass
class StageInputs:
    """The upstreams, seed and record count of one run, and the work directory their generation inputs name."""

    upstreams: dict[str | dg.AssetKey, StageDataset]
    upstream_versions: dict[str, str]  # by upstream label
    lineage: Lineage
    seed: Seed | None
    num_records: int
    inputs: dict[str, Any]  # the generation inputs the work key hashes
    work_key: str
    work_dir: Path
    work_was_new: bool

    def open_work_dir(self, scope: StageScope) -> None:
        """Record the inputs in the work directory and move the seed there (saying which earlier work is not reused)."""
        for line in resumable_work.describe_superseded_work(self.work_dir.parent, self.work_key, self.inputs):
            scope.context.log.warning(f"{scope.where}: starting fresh: {line}")
        resumable_work.write_inputs(self.work_dir, self.inputs)
        if self.seed is not None:
            self.seed = _move_seed(self.seed, self.work_dir / resumable_work.SEED_DIR)


def prepare_inputs(scope: StageScope, upstream_values: dict[str | dg.AssetKey, Any], inputs_dir: Path) -> StageInputs:
    """Read the upstreams, build the seed, count the records and name the work directory."""
    if scope.config.num_records is not None:
        problem = check_num_records(scope.config.num_records, maximum=scope.workflow.max_num_records)
        if problem:
            raise scope.fail(f"run config num_records {problem}")

    # External upstreams arrive as whatever their IO manager loads: write them as parquet first.
    upstreams = {
        dep: as_stage_dataset(value, where=scope.where, work_dir=inputs_dir, name=upstream_label(dep))
        for dep, value in upstream_values.items()
    }
    upstream_versions = {upstream_label(dep): data_version_of(ds) for dep, ds in upstreams.items()}
    lineage = _lineage(scope, upstreams, upstream_versions)
    try:
        seed = build_seed(scope.stage, upstreams, scope.upstream_keys, inputs_dir, where=scope.where)
    except ValueError as exc:
        raise scope.fail(str(exc).removeprefix(f"{scope.where}, ")) from None

    num_records = _resolve_num_records(scope, seed)
    inputs = generation_inputs(
        scope.stage,
        seed_fingerprint=_seed_fingerprint(scope, seed, upstream_versions),
        num_records=num_records,
        run_settings=scope.resource.data_designer_run_config().model_dump(mode="json"),
        partition=(
            {"key": scope.partition, "index": scope.partition_index, "count": scope.partition_count}
            if scope.partition is not None
            else None
        ),
        selection_strategy=scope.selection_strategy,
    )
    work_key = generation_work_key(inputs)
    for path, why in (inputs.get("unrepeatable") or {}).get("why", {}).items():
        scope.context.log.warning(
            f"{scope.where}: {path}: {why}, so its code cannot be compared with an earlier run's: this stage never "
            "resumes earlier batches, and an edit does not mark it unsynced. Give the callable a version with "
            "@dd_assets.versioned('...') to resume and track it"
        )
    work_dir = scope.io_manager.work_root(scope.workflow.name, scope.stage.name, scope.partition) / work_key
    return StageInputs(
        upstreams, upstream_versions, lineage, seed, num_records, inputs, work_key, work_dir, not work_dir.exists()
    )


def data_version_of(dataset: StageDataset) -> str:
    """An upstream's data version: as its record says, else hashed from its files."""
    return dataset.record.get("data_version") or parquet_data_version(dataset.files)


def _lineage(scope: StageScope, upstreams: dict[str | dg.AssetKey, StageDataset], versions: dict[str, str]) -> Lineage:
    """The ancestors' versions this run derives from; fails when its upstreams disagree on one (lineage.py)."""
    inputs: dict[str, Lineage] = {}
    for dep, dataset in upstreams.items():
        label = upstream_label(dep)
        key = f"{scope.workflow.name}/{dep}" if isinstance(dep, str) else scope.upstream_keys[dep].to_user_string()
        parts = record_lineage(dataset.record, key, versions[label])
        inputs.update(parts if len(parts) > 1 else {label: next(iter(parts.values()))})
    try:
        return merged_lineage(inputs)
    except MixedVersionsError as exc:
        raise scope.fail(str(exc)) from None


def _resolve_num_records(scope: StageScope, seed: Seed | None) -> int:
    """Run config > ``Stage.num_records`` > the selected block of the seed > the seed > Data Designer's default."""
    partition = (scope.partition_index, scope.partition_count) if scope.partition is not None else None
    try:
        return resolve_num_records(
            scope.stage,
            seed.num_rows if seed is not None else None,
            override=scope.config.num_records,
            partition=partition,
            partition_block=scope.partition_block,
        )
    except RecordCountError as exc:
        raise scope.fail(str(exc)) from None


def _seed_fingerprint(scope: StageScope, seed: Seed | None, upstream_versions: dict[str, str]) -> str | None:
    """The content of the seed this run reads: upstream data version(s), or the seed files' bytes."""
    if seed is not None:
        if len(upstream_versions) == 1:
            return next(iter(upstream_versions.values()))
        return files_fingerprint(sorted(Path(seed.glob).parent.glob("*.parquet")))
    try:
        return own_seed_fingerprint(scope.stage.builder)
    except FileNotFoundError as exc:
        raise scope.fail(f"the config's seed file {exc} does not exist (field 'config')") from None


def _move_seed(seed: Seed, target: Path) -> Seed:
    """Move a seed built in the run's inputs folder into its work directory (a stable path for resume)."""
    source = Path(seed.glob).parent
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    seed.glob = str(target / "*.parquet")
    return seed
