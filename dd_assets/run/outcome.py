"""What a stage run hands Dagster: its record (``stage.json``), metadata, check results and the output to publish."""

from __future__ import annotations

import time
import uuid
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from upath import UPath

from dd_assets.engine import artifact_layout
from dd_assets.run.checks import safe_check_results
from dd_assets.run.generation import Generated
from dd_assets.run.generation_failures import early_shutdown_cause
from dd_assets.run.metadata import compact_column_statistics, stage_metadata
from dd_assets.run.seeds import upstream_label
from dd_assets.run.stage_cost import success_cost_metadata
from dd_assets.run.stage_inputs import StageInputs
from dd_assets.run.stage_output import parquet_files, write_empty
from dd_assets.run.stage_scope import StageScope
from dd_assets.spec.column_schema import stage_column_schema
from dd_assets.spec.versioning import parquet_data_version
from dd_assets.storage.dagster_agreement import VERSION_METADATA_KEY
from dd_assets.storage.dataset import StageDataset
from dd_assets.storage.layout import VERSIONS_DIR
from dd_assets.storage.publish import StageOutput
from dd_assets.storage.stage_lock import StageLock


def absolute_uri(path: UPath) -> str:
    """A local path made absolute (``dagster/uri`` must not depend on where ``dagster`` started); URLs as they are."""
    if not path.protocol:
        return str(Path(str(path)).absolute())
    return str(path)


def first_record(scope: StageScope, inputs: StageInputs) -> dict[str, Any]:
    """The stage's record as far as its inputs tell: what it derives from, and where its work is."""
    block = scope.partition_block
    return {
        "workflow": scope.workflow.name,
        "stage": scope.stage.name,
        **({"partition": scope.partition} if scope.partition is not None else {}),
        **({"partition_block": {"index": block.index, "count": block.num_partitions}} if block is not None else {}),
        "code_version": scope.code_version,
        "upstream": {
            upstream_label(dep): {
                "asset_key": scope.upstream_keys[dep].to_user_string(),
                "data_version": inputs.upstream_versions[upstream_label(dep)],
                "rows": inputs.upstreams[dep].num_rows,
            }
            for dep in scope.stage.depends_on
        },
        "lineage": inputs.lineage,
        "seed_fingerprint": inputs.inputs["seed_fingerprint"],
        "run_id": scope.context.run.run_id,
        "work_key": inputs.work_key,
        "resumed": False,
        "model_usage": {},
        "num_records_requested": inputs.num_records,
    }


def empty_upstream_output(scope: StageScope, inputs: StageInputs, record: dict[str, Any]) -> list[Path]:
    """The empty output of a stage whose seed has no rows, made without model calls."""
    empty = [dep for dep in scope.stage.depends_on if inputs.upstreams[dep].is_empty]
    cause = f"upstream {', '.join(map(upstream_label, empty))} is empty" if empty else "the combined seed is empty"
    scope.context.log.info(f"{scope.where}: {cause}; skipping without model calls")
    files = [write_empty(scope, inputs.work_dir, inputs.seed)]
    record.update(
        status="skipped_empty_upstream",
        num_records_actual=0,
        upstream_stage=upstream_label(empty[0]) if empty else None,
    )
    return files


def check_completion(scope: StageScope, record: dict[str, Any], work_dir: Path) -> None:
    """Fail before publishing when too few of the requested records were generated (finished batches stay)."""
    requested = record.get("num_records_requested") or 0
    actual = record.get("num_records_actual") or 0
    threshold = scope.stage.completion_threshold
    if requested and actual and actual / requested < threshold:
        early = (
            f" (Data Designer shut generation down early: {early_shutdown_cause(scope.resource)})"
            if record.get("early_shutdown")
            else ""
        )
        raise scope.fail(
            f"generated {actual} of {requested} requested records ({actual / requested:.1%}), below "
            f"completion_threshold {threshold}{early}; nothing was published and the previous output is kept. The "
            f"finished batches stay in {work_dir}: the next materialization reuses the full ones and "
            "generates only the batches that dropped records"
        )


def stage_result(
    scope: StageScope,
    inputs: StageInputs,
    record: dict[str, Any],
    files: list[Path],
    generated: Generated | None,
    *,
    lock: StageLock,
    inputs_dir: Path,
    started: float,
) -> tuple[dg.Output, list[dg.AssetCheckResult]]:
    """The output Dagster publishes (under the stage's lock) with its metadata, and the stage's check results."""
    stage, work_dir = scope.stage, inputs.work_dir
    dataset = StageDataset.from_files(UPath(work_dir), [UPath(f) for f in files])
    if dataset.num_rows == 0 and record.get("status") is None:
        if not stage.allow_empty:
            raise scope.fail(
                "produced an empty output; set allow_empty=True to accept it (downstream stages are then skipped)"
            )
        record["status"] = "completed_empty"
    record.setdefault("status", "completed")
    if record["status"] == "overridden" and dataset.num_rows == 0 and not stage.allow_empty:
        raise scope.fail(f"output_override {scope.config.output_override!r} has no rows and allow_empty is False")

    data_version = parquet_data_version(files)
    version = f"{data_version[:12]}-{uuid.uuid4().hex[:8]}"
    record.update(
        output_rows=dataset.num_rows,
        data_version=data_version,
        materialized_at=datetime.now(UTC).isoformat(),
        duration_s=round(time.monotonic() - started, 3),
    )
    generated_files = parquet_files(generated.result.artifact_storage.final_dataset_path) if generated else []
    check_results = safe_check_results(stage, record, dataset.num_rows, generated_files, scope.asset_key)
    # The one line a person reads per stage; Data Designer's own lines are in the event log at DEBUG.
    scope.context.log.info(
        f"[{scope.stage_context.label}] {record['status']}: {dataset.num_rows} rows x {len(dataset.columns)} "
        f"columns in {record['duration_s']:.1f}s (version {version})"
    )
    column_statistics = compact_column_statistics(_analysis(generated))
    record["column_statistics"] = column_statistics
    stage_dir = scope.io_manager.stage_dir(scope.workflow.name, stage.name, scope.partition)
    metadata = stage_metadata(
        dataset=dataset,
        uri=absolute_uri(stage_dir / VERSIONS_DIR / version),
        builder=stage.builder,
        seed=inputs.seed,
        record=record,
        column_statistics=column_statistics,
        planned_schema=stage_column_schema(scope.workflow, stage),
    )
    if generated is not None:
        metadata.update(generated.progress.final_metadata())
    metadata.update(success_cost_metadata(scope, record))
    if record.get("early_shutdown") is not None:  # reported by Data Designer 1.0
        metadata["dd_assets/early_shutdown"] = dg.MetadataValue.bool(record["early_shutdown"])
    metadata[VERSION_METADATA_KEY] = dg.MetadataValue.text(version)
    stage_output = StageOutput(
        workflow=scope.workflow.name,
        stage=stage.name,
        version=version,
        work_dir=work_dir,
        files=[Path(f) for f in files],
        record=record,
        lock=lock,
        partition=scope.partition,
        partitions_def=stage.partitions_def,
        artifacts_dir=artifact_layout.artifacts_dir(work_dir) if generated is not None else None,
        extra_cleanup=[inputs_dir],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # Output(data_version=...) is beta in Dagster 1.13
        output = dg.Output(
            stage_output, output_name=scope.output_name, data_version=dg.DataVersion(data_version), metadata=metadata
        )
    return output, check_results


def _analysis(generated: Generated | None) -> Any:
    """Data Designer's profile of the generated dataset, if it made one."""
    if generated is None:
        return None
    try:
        return generated.result.load_analysis()
    except Exception:
        return None
