"""Running one stage: seed, generate with the shared DataDesigner, select the output, describe it.

Mirrors ``CompositeWorkflow.run()`` for one stage (Data Designer's
``data_designer/interface/composite_workflow.py``) and goes past it: joins, external upstreams,
run-config overrides, resume keyed by the generation inputs, a completion guard before publishing, and an
output the IO manager publishes while this run still holds the stage's lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
from data_designer.config.config_builder import DataDesignerConfigBuilder
from data_designer.config.run_config import ResumeMode
from data_designer.config.seed import IndexRange, PartitionBlock
from data_designer.config.seed_source import LocalFileSeedSource
from data_designer.interface.errors import DataDesignerEarlyShutdownError
from upath import UPath

from dd_assets.engine import artifact_layout
from dd_assets.engine.costs import cost_metadata, run_total_cost, stage_cost, total_cost
from dd_assets.engine.data_designer_surface import creation_outcome
from dd_assets.engine.log_bridge import data_designer_logs_to_dagster
from dd_assets.engine.resource import DataDesignerResource
from dd_assets.engine.stage_context import StageContext, running_stage
from dd_assets.engine.stage_guard import StageGuard, read_tokens_spent, write_tokens_spent
from dd_assets.run import resumable_work
from dd_assets.run.checks import safe_check_results
from dd_assets.run.metadata import compact_column_statistics, stage_metadata
from dd_assets.run.progress import StageProgress, engine_event_reporter
from dd_assets.run.remote_checkpoint import RemoteCheckpoint
from dd_assets.run.seeds import Seed, as_stage_dataset, build_seed, builder_with_seed, upstream_label
from dd_assets.spec.column_schema import stage_column_schema
from dd_assets.spec.secrets import LiteralSecretError, redact
from dd_assets.spec.seed_files import RecordCountError, resolve_num_records
from dd_assets.spec.stage_models import used_model_aliases, used_model_configs
from dd_assets.spec.versioning import (
    files_fingerprint,
    generation_inputs,
    generation_work_key,
    own_seed_fingerprint,
    parquet_data_version,
)
from dd_assets.spec.workflow import (
    Stage,
    Workflow,
    check_num_records,
    check_token_budget,
)
from dd_assets.storage.dagster_agreement import VERSION_METADATA_KEY
from dd_assets.storage.dataset import StageDataset
from dd_assets.storage.io_manager import StageParquetIOManager
from dd_assets.storage.layout import CHECKPOINTS_DIR, VERSIONS_DIR, describe
from dd_assets.storage.lineage import Lineage, MixedVersionsError, merged_lineage, record_lineage
from dd_assets.storage.publish import StageOutput
from dd_assets.storage.records import StageRecordUnreadableError, StageStorageError
from dd_assets.storage.stage_lock import StageBusyError, StageLock


class StageRunConfig(dg.Config):
    """Per-materialization settings of a stage (launchpad / ``--config``).

    Attributes:
        num_records: records to generate this run; overrides ``Stage.num_records`` and the seed size.
        output_override: a parquet file or directory that replaces the stage's output; the stage makes
            no model call (like Data Designer's ``stage_output_overrides``, without generating first).
        token_budget: tokens this stage may use; overrides ``Stage.token_budget`` for this run.
    """

    num_records: int | None = None
    output_override: str | None = None
    token_budget: int | None = None


def absolute_uri(path: UPath) -> str:
    """A local path made absolute (``dagster/uri`` must not depend on where ``dagster`` started); URLs as they are."""
    if not path.protocol:
        return str(Path(str(path)).absolute())
    return str(path)


class StageFailure(dg.Failure):
    """A stage cannot run; the message names the workflow and the stage."""


@dataclass
class StageRun:
    """One materialization of one stage."""

    context: dg.AssetExecutionContext
    workflow: Workflow
    stage: Stage
    config: StageRunConfig
    code_version: str
    resource: DataDesignerResource
    io_manager: StageParquetIOManager
    upstream_keys: dict[str | dg.AssetKey, dg.AssetKey]
    asset_key: dg.AssetKey
    output_name: str
    check_results: list[dg.AssetCheckResult] = field(default_factory=list)
    # set while running, for the failure paths
    _lock: StageLock | None = None
    _work_dir: Path | None = None
    _work_was_new: bool = True
    _model_usage: dict[str, Any] = field(default_factory=dict)
    _progress: StageProgress | None = None
    _interrupted: str | None = None

    def __post_init__(self) -> None:
        self.partition: str | None = None
        self.partition_index, self.partition_count = 0, 1
        if self.stage.partitions_def is not None:
            self.partition = self.context.partition_key
            keys = list(self.stage.partitions_def.get_partition_keys(dynamic_partitions_store=self.context.instance))
            if self.partition not in keys:
                raise self.fail(f"partition {self.partition!r} is not one of the stage's partitions")
            self.partition_index, self.partition_count = keys.index(self.partition), len(keys)
        label = f"{self.workflow.name}/{self.stage.name}"
        self.stage_context = StageContext(label=f"{label}[{self.partition}]" if self.partition is not None else label)

    @property
    def where(self) -> str:
        return describe(self.workflow.name, self.stage.name, self.partition)

    @property
    def partition_block(self) -> PartitionBlock | None:
        """For a partition that splits its seed (a root seed file, or upstreams not partitioned like it): its block."""
        if self.partition is None:
            return None
        upstream_partitions = [self.upstream_partitions_def(dep) for dep in self.stage.depends_on]
        if upstream_partitions and all(p == self.stage.partitions_def for p in upstream_partitions):
            return None  # partition k reads upstream partition k
        return PartitionBlock(index=self.partition_index, num_partitions=self.partition_count)

    def upstream_partitions_def(self, dep: str | dg.AssetKey) -> dg.PartitionsDefinition | None:
        """An upstream's partitions: a stage's own, or those of any other asset as this job knows it."""
        if isinstance(dep, str):
            return self.workflow.stage(dep).partitions_def
        return self.context.job_def.asset_layer.get(self.upstream_keys[dep]).partitions_def

    @property
    def selection_strategy(self) -> IndexRange | PartitionBlock | None:
        """The seed selection this run uses: the stage's, or this partition's block."""
        return self.partition_block or self.stage.selection_strategy

    @property
    def secrets(self) -> list[str]:
        return self.resource.secret_values() + self.io_manager.secret_values()

    def fail(self, message: str) -> StageFailure:
        return StageFailure(description=redact(f"{self.where}: {message}", self.secrets))

    # ---------------------------------------------------------------------------------------------
    def execute(self, upstream_values: dict[str | dg.AssetKey, Any]) -> Iterator[Any]:
        """Run the stage and yield its output, then its check results (the per-stage-step mode).

        The stage's lock is taken first and released only after Dagster has handled the output (published it
        and recorded the materialization), so storage and Dagster's record change under one lock.
        """
        self.open()
        try:
            try:
                output = self.produce(upstream_values)
            except Exception as exc:  # an interrupt ends the step at once; its tokens stay in the work folder
                metadata, observation = self.spend_of_failure()
                if observation is not None:
                    yield observation
                if isinstance(exc, dg.Failure) and metadata:
                    raise StageFailure(description=exc.description, metadata={**exc.metadata, **metadata}) from None
                raise
            yield output
        finally:
            self.close()
        yield from self.check_results

    def open(self) -> None:
        """Take the stage's lock and make storage and Dagster agree; the first step of a stage run."""
        lock = self.io_manager.stage_lock(
            self.workflow.name, self.stage.name, self.context.run.run_id, partition=self.partition
        )
        try:
            lock.acquire()
        except StageBusyError as exc:
            raise StageFailure(description=str(exc)) from None
        except OSError as exc:
            raise self.fail(f"cannot write to {self.io_manager.base_dir!r} ({exc}); nothing was changed") from None
        self._lock = lock
        try:
            self._agree_with_dagster(lock)
        except BaseException:
            self.close()
            raise

    def produce(self, upstream_values: dict[str | dg.AssetKey, Any]) -> dg.Output:
        """Generate the stage (holding its lock) and return the output for Dagster to publish."""
        assert self._lock is not None, "open() first"
        with running_stage(self.stage_context):
            return self._run_guarded(upstream_values, self._lock)

    def interrupt(self, reason: str) -> None:
        """Stop this stage from another thread: no further model request, Data Designer's run cancelled, finished
        batches kept (a stage not yet generating stops before its first request)."""
        self._interrupted = reason
        guard = self.stage_context.guard
        if guard is not None:
            guard.stop(f"stopped: {reason}")

    def close(self) -> None:
        """Release the stage's lock; call it once Dagster has handled the output (or the run failed)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _agree_with_dagster(self, lock: StageLock) -> None:
        """Under the lock: set an unreadable record aside, and record a commit a killed run left unrecorded."""
        workflow, stage = self.workflow.name, self.stage.name
        try:
            message = self.io_manager.reconcile(
                workflow, stage, self.asset_key, self.context.instance, lock, self.partition
            )
        except StageRecordUnreadableError as exc:
            moved = self.io_manager.set_aside_unreadable_record(workflow, stage, self.partition)
            self.context.log.warning(f"{exc}; moved it to {moved} and treating the stage as unpublished")
            return
        if message:
            self.context.log.warning(message)

    def _run_guarded(self, upstream_values: dict[str | dg.AssetKey, Any], lock: StageLock) -> dg.Output:
        inputs_dir = self.io_manager.work_root(self.workflow.name, self.stage.name, self.partition) / (
            f"inputs-{self.context.run.run_id}"
        )
        try:
            return self._run(upstream_values, inputs_dir, lock)
        except StageFailure:
            shutil.rmtree(inputs_dir, ignore_errors=True)
            raise
        except (OSError, StageStorageError) as exc:
            shutil.rmtree(inputs_dir, ignore_errors=True)
            message = f"storage error ({exc}); the published output is unchanged"
            raise self.fail(self._with_disk_full_note(message, exc)) from None
        except BaseException:
            shutil.rmtree(inputs_dir, ignore_errors=True)  # the work directory itself stays, for resume
            raise

    def _with_disk_full_note(self, message: str, exc: BaseException) -> str:
        """On a full disk, free what this run wrote unless it holds paid work, and say so in ``message``."""
        disk_full = getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in str(exc)
        work_dir = self._work_dir
        if not disk_full or work_dir is None or not work_dir.exists():
            return message
        size = resumable_work.human_size(resumable_work.tree_size(work_dir))
        if self._work_was_new and not self._model_usage:
            shutil.rmtree(work_dir, ignore_errors=True)
            return f"{message}. Freed {size} this run had written in {work_dir} (it made no model requests)"
        resumable_work.discard_partial_results(work_dir)
        kept = resumable_work.human_size(resumable_work.tree_size(work_dir))
        return (
            f"{message}. Kept {kept} of finished, paid-for batches in {work_dir} so the next run resumes them; "
            "delete that folder to free the space instead"
        )

    # ---------------------------------------------------------------------------------------------
    def _run(self, upstream_values: dict[str | dg.AssetKey, Any], inputs_dir: Path, lock: StageLock) -> dg.Output:
        started = time.monotonic()
        stage = self.stage
        if self.config.num_records is not None:
            problem = check_num_records(self.config.num_records, maximum=self.workflow.max_num_records)
            if problem:
                raise self.fail(f"run config num_records {problem}")

        # External upstreams arrive as whatever their IO manager loads: write them as parquet first.
        upstreams = {
            dep: as_stage_dataset(value, where=self.where, work_dir=inputs_dir, name=upstream_label(dep))
            for dep, value in upstream_values.items()
        }
        upstream_versions = {upstream_label(dep): _data_version_of(ds) for dep, ds in upstreams.items()}
        lineage = self._lineage(upstreams, upstream_versions)
        try:
            seed = build_seed(stage, upstreams, self.upstream_keys, inputs_dir, where=self.where)
        except ValueError as exc:
            raise self.fail(str(exc).removeprefix(f"{self.where}, ")) from None

        num_records = self._resolve_num_records(seed)
        run_settings = self.resource.data_designer_run_config().model_dump(mode="json")
        inputs = generation_inputs(
            stage,
            seed_fingerprint=self._seed_fingerprint(seed, upstream_versions),
            num_records=num_records,
            run_settings=run_settings,
            partition=(
                {"key": self.partition, "index": self.partition_index, "count": self.partition_count}
                if self.partition is not None
                else None
            ),
            selection_strategy=self.selection_strategy,
        )
        work_key = generation_work_key(inputs)
        for path, why in (inputs.get("unrepeatable") or {}).get("why", {}).items():
            self.context.log.warning(
                f"{self.where}: {path}: {why}, so its code cannot be compared with an earlier run's: this stage never "
                "resumes earlier batches, and an edit does not mark it unsynced. Give the callable a version with "
                "@dd_assets.versioned('...') to resume and track it"
            )
        work_root = self.io_manager.work_root(self.workflow.name, stage.name, self.partition)
        work_dir = work_root / work_key
        self._work_dir, self._work_was_new = work_dir, not work_dir.exists()
        for line in resumable_work.describe_superseded_work(work_root, work_key, inputs):
            self.context.log.warning(f"{self.where}: starting fresh: {line}")
        resumable_work.write_inputs(work_dir, inputs)
        if seed is not None:
            seed = _move_seed(seed, work_dir / "seed")

        record: dict[str, Any] = {
            "workflow": self.workflow.name,
            "stage": stage.name,
            **({"partition": self.partition} if self.partition is not None else {}),
            **(
                {"partition_block": {"index": self.partition_block.index, "count": self.partition_block.num_partitions}}
                if self.partition_block is not None
                else {}
            ),
            "code_version": self.code_version,
            "upstream": {
                upstream_label(dep): {
                    "asset_key": self.upstream_keys[dep].to_user_string(),
                    "data_version": upstream_versions[upstream_label(dep)],
                    "rows": upstreams[dep].num_rows,
                }
                for dep in stage.depends_on
            },
            "lineage": lineage,
            "seed_fingerprint": inputs["seed_fingerprint"],
            "run_id": self.context.run.run_id,
            "work_key": work_key,
            "resumed": False,
            "model_usage": {},
            "num_records_requested": num_records,
        }

        artifacts_dir: Path | None = None
        analysis = None
        generated_files: list[Path] = []
        if self.config.output_override:
            files = self._override_files(self.config.output_override)
            record.update(status="overridden", num_records_actual=0, output_override=self.config.output_override)
        elif seed is not None and seed.num_rows == 0:
            empty = [dep for dep in stage.depends_on if upstreams[dep].is_empty]
            cause = (
                f"upstream {', '.join(map(upstream_label, empty))} is empty" if empty else "the combined seed is empty"
            )
            self.context.log.info(f"{self.where}: {cause}; skipping without model calls")
            files = [self._write_empty(work_dir, seed)]
            record.update(
                status="skipped_empty_upstream",
                num_records_actual=0,
                upstream_stage=upstream_label(empty[0]) if empty else None,
            )
        else:
            files, artifacts_dir, analysis, generated_files = self._generate(work_dir, seed, num_records, record)
            self._check_completion(record, work_dir)

        dataset = StageDataset.from_files(UPath(work_dir), [UPath(f) for f in files])
        if dataset.num_rows == 0 and record.get("status") is None:
            if not stage.allow_empty:
                raise self.fail(
                    "produced an empty output; set allow_empty=True to accept it (downstream stages are then skipped)"
                )
            record["status"] = "completed_empty"
        record.setdefault("status", "completed")
        if record["status"] == "overridden" and dataset.num_rows == 0 and not stage.allow_empty:
            raise self.fail(f"output_override {self.config.output_override!r} has no rows and allow_empty is False")

        data_version = parquet_data_version(files)
        version = f"{data_version[:12]}-{uuid.uuid4().hex[:8]}"
        record.update(
            output_rows=dataset.num_rows,
            data_version=data_version,
            materialized_at=datetime.now(UTC).isoformat(),
            duration_s=round(time.monotonic() - started, 3),
        )
        self.check_results = safe_check_results(stage, record, dataset.num_rows, generated_files, self.asset_key)
        # The one line a person reads per stage; Data Designer's own lines are in the event log at DEBUG.
        self.context.log.info(
            f"[{self.stage_context.label}] {record['status']}: {dataset.num_rows} rows x {len(dataset.columns)} "
            f"columns in {record['duration_s']:.1f}s (version {version})"
        )
        column_statistics = compact_column_statistics(analysis)
        record["column_statistics"] = column_statistics
        metadata = stage_metadata(
            dataset=dataset,
            uri=absolute_uri(
                self.io_manager.stage_dir(self.workflow.name, stage.name, self.partition) / VERSIONS_DIR / version
            ),
            builder=stage.builder,
            seed=seed,
            record=record,
            column_statistics=column_statistics,
            planned_schema=stage_column_schema(self.workflow, stage),
        )
        if self._progress is not None:
            metadata.update(self._progress.final_metadata())
        metadata.update(self._cost_metadata(record))
        if record.get("early_shutdown") is not None:  # reported by Data Designer 1.0
            metadata["dd_assets/early_shutdown"] = dg.MetadataValue.bool(record["early_shutdown"])
        metadata[VERSION_METADATA_KEY] = dg.MetadataValue.text(version)
        output = StageOutput(
            workflow=self.workflow.name,
            stage=stage.name,
            version=version,
            work_dir=work_dir,
            files=[Path(f) for f in files],
            record=record,
            lock=lock,
            partition=self.partition,
            partitions_def=self.stage.partitions_def,
            artifacts_dir=artifacts_dir,
            extra_cleanup=[inputs_dir],
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)  # Output(data_version=...) is beta in Dagster 1.13
            return dg.Output(
                output,
                output_name=self.output_name,
                data_version=dg.DataVersion(data_version),
                metadata=metadata,
            )

    def _cost_metadata(self, record: dict[str, Any]) -> dict[str, Any]:
        """Tokens (and, with prices set, cost) of this run, logged with the run's total so far."""
        cost = self._cost(record.get("model_usage") or {})
        record["cost"] = cost
        self._log_cost(cost)
        return cost_metadata(cost, priced=bool(self.resource.prices))

    def _cost(self, model_usage: dict[str, Any]) -> dict[str, Any]:
        health_checks = self.stage_context.usage.health_checks_as_dict()
        return stage_cost(model_usage, self.resource.prices, self.stage.builder, health_checks)

    def _log_cost(self, cost: dict[str, Any], failed: bool = False) -> None:
        prices = self.resource.prices
        spent = cost["input_tokens"] or cost["output_tokens"] or cost["health_check_tokens"]
        if not spent or not (prices or failed):
            return
        checks = f" (and {cost['health_check_tokens']} in health checks)" if cost["health_check_tokens"] else ""
        line = f"{cost['input_tokens']} input and {cost['output_tokens']} output tokens{checks}"
        if prices:
            total = run_total_cost(self.context.instance, self.context.run.run_id) + total_cost(cost)
            unpriced = f" (no price for {', '.join(cost['unpriced'])})" if cost["unpriced"] else ""
            line += f", ${total_cost(cost):.4f}{unpriced}; this run so far: ${total:.4f}"
        if failed:
            self.context.log.warning(f"{self.where}: failed after spending {line}")
        else:
            self.context.log.info(f"{self.where}: {line}")

    def spend_of_failure(self) -> tuple[dict[str, Any], dg.AssetObservation | None]:
        """What this failed run spent: metadata for its failure, and an observation of the stage recording it
        (so the asset's history and the run's total cost include it); empty when it made no model request."""
        model_usage = self.stage_context.usage.as_dict()
        cost = self._cost(model_usage)
        if not model_usage and not cost["health_check_tokens"]:
            return {}, None
        metadata = cost_metadata(cost, priced=bool(self.resource.prices))
        metadata["dd_assets/model_usage"] = dg.MetadataValue.json(model_usage)
        try:
            self._log_cost(cost, failed=True)
        except Exception as exc:  # noqa: BLE001 - never hide the stage's own failure behind this
            self.context.log.warning(f"{self.where}: could not sum this run's cost: {exc}")
        observation = dg.AssetObservation(
            asset_key=self.asset_key,
            partition=self.partition,
            metadata={**metadata, "dd_assets/status": dg.MetadataValue.text("failed")},
        )
        return metadata, observation

    def _lineage(self, upstreams: dict[str | dg.AssetKey, StageDataset], versions: dict[str, str]) -> Lineage:
        """The ancestors' versions this run derives from; fails when its upstreams disagree on one (lineage.py)."""
        inputs: dict[str, Lineage] = {}
        for dep, dataset in upstreams.items():
            label = upstream_label(dep)
            key = f"{self.workflow.name}/{dep}" if isinstance(dep, str) else self.upstream_keys[dep].to_user_string()
            parts = record_lineage(dataset.record, key, versions[label])
            inputs.update(parts if len(parts) > 1 else {label: next(iter(parts.values()))})
        try:
            return merged_lineage(inputs)
        except MixedVersionsError as exc:
            raise self.fail(str(exc)) from None

    def _resolve_num_records(self, seed: Seed | None) -> int:
        """Run config > ``Stage.num_records`` > the selected block of the seed > the seed > Data Designer's default."""
        partition = (self.partition_index, self.partition_count) if self.partition is not None else None
        try:
            return resolve_num_records(
                self.stage,
                seed.num_rows if seed is not None else None,
                override=self.config.num_records,
                partition=partition,
                partition_block=self.partition_block,
            )
        except RecordCountError as exc:
            raise self.fail(str(exc)) from None

    def _seed_fingerprint(self, seed: Seed | None, upstream_versions: dict[str, str]) -> str | None:
        """The content of the seed this run reads: upstream data version(s), or the seed files' bytes."""
        if seed is not None:
            if len(upstream_versions) == 1:
                return next(iter(upstream_versions.values()))
            return files_fingerprint(sorted(Path(seed.glob).parent.glob("*.parquet")))
        try:
            return own_seed_fingerprint(self.stage.builder)
        except FileNotFoundError as exc:
            raise self.fail(f"the config's seed file {exc} does not exist (field 'config')") from None

    def _check_completion(self, record: dict[str, Any], work_dir: Path) -> None:
        """Fail before publishing when too few of the requested records were generated (finished batches stay)."""
        requested = record.get("num_records_requested") or 0
        actual = record.get("num_records_actual") or 0
        threshold = self.stage.completion_threshold
        if requested and actual and actual / requested < threshold:
            early = (
                f" (Data Designer shut generation down early: {self._early_shutdown_cause()})"
                if record.get("early_shutdown")
                else ""
            )
            raise self.fail(
                f"generated {actual} of {requested} requested records ({actual / requested:.1%}), below "
                f"completion_threshold {threshold}{early}; nothing was published and the previous output is kept. The "
                f"finished batches stay in {work_dir}: the next materialization reuses the full ones and "
                "generates only the batches that dropped records"
            )

    # ---------------------------------------------------------------------------------------------
    def _generate(
        self, work_dir: Path, seed: Seed | None, num_records: int, record: dict[str, Any]
    ) -> tuple[list[Path], Path, Any, list[Path]]:
        stage = self.stage
        if seed is not None and stage.builder.get_seed_config() is not None:
            self.context.log.warning(f"{self.where}: the config's own seed is replaced by the upstream output")
        builder = builder_with_seed(stage, seed, self.selection_strategy, own_seed_block=self.partition_block)
        self._check_models(builder)
        data_designer = self.resource.get_data_designer()
        try:
            data_designer.register_stage_models(builder, owner=self.where)
        except ValueError as exc:
            raise self.fail(str(exc).removeprefix(f"{self.where}: ")) from None

        artifacts_dir = artifact_layout.artifacts_dir(work_dir)
        checkpoint = self._remote_checkpoint(work_dir)
        if checkpoint is not None:
            restored = checkpoint.restore()
            if restored:
                self.context.log.info(
                    f"{self.where}: restored {restored} finished batch(es) another run checkpointed to "
                    f"{checkpoint.remote_dir}"
                )
        resume = ResumeMode.NEVER
        if (artifacts_dir / artifact_layout.METADATA).exists():
            reopened, resumable = resumable_work.reopen_short_batches(artifacts_dir, stage.completion_threshold)
            if resumable:
                resume = ResumeMode.ALWAYS
                kept = resumable_work.finished_batches(work_dir)
                again = f"; {reopened} batch(es) that dropped records are generated again" if reopened else ""
                self.context.log.info(f"{self.where}: resuming {kept} finished batch(es) in {artifacts_dir}{again}")
            else:
                self.context.log.warning(
                    f"{self.where}: the finished batches in {artifacts_dir} dropped records and were already "
                    "post-processed, so they cannot be completed; generating from the start"
                )
        if resume == ResumeMode.NEVER and artifacts_dir.exists():
            shutil.rmtree(artifacts_dir)
        record["resumed"] = resume == ResumeMode.ALWAYS
        guard = self._stage_guard(work_dir, builder)

        usage = self.stage_context.usage
        prefix = f"[{self.workflow.name}/{stage.name}] "
        secrets = self.secrets
        self._progress = progress = StageProgress(
            where=self.where,
            work_dir=work_dir,
            num_records=num_records,
            buffer_size=self.resource.data_designer_run_config().buffer_size,
            usage=usage.as_dict,
            report=engine_event_reporter(self.context),
            every_s=self.resource.progress_every_s,
        )
        progress.start()
        if checkpoint is not None:
            checkpoint.start()
        try:
            with data_designer_logs_to_dagster(self.context, prefix, secrets, stage_label=self.stage_context.label):
                result = self._create_guarded(
                    guard, data_designer, builder, num_records, work_dir, resume, record, checkpoint
                )
                outcome = creation_outcome(result, num_records)
                record["num_records_actual"] = outcome.actual
                if outcome.resumed is not None:
                    record["resumed"] = outcome.resumed  # Data Designer 1.0 says which resume mode it applied
                if outcome.early_shutdown is not None:
                    record["early_shutdown"] = outcome.early_shutdown
                if outcome.early_shutdown and outcome.is_partial:
                    self.context.log.warning(
                        f"{self.where}: Data Designer shut generation down early after {outcome.actual} of "
                        f"{outcome.requested} records: {self._early_shutdown_cause()}"
                    )
                output_result = result
                if stage.output_processors:
                    output_result = self._run_output_processors(
                        data_designer, builder, result, artifacts_dir, outcome.actual
                    )
        except StageFailure:
            self._model_usage = usage.as_dict()
            raise
        except OSError:
            self._model_usage = usage.as_dict()
            raise
        except DataDesignerEarlyShutdownError:
            self._model_usage = usage.as_dict()
            models = models_used(builder, self.resource)
            report = guard.failure_report()  # what failed, which Data Designer leaves to the warnings
            raise self.fail(
                f"Data Designer shut generation down early before any record was finished"
                f"{f' ({models})' if models else ''}: {f'{redact(report, secrets)}; ' if report else ''}"
                f"{self._early_shutdown_cause()}"
            ) from None
        except Exception as exc:
            self._model_usage = usage.as_dict()
            models = models_used(builder, self.resource)
            reason = generation_failure_reason(exc, guard.failure_report())
            message = f"generation failed{f' ({models})' if models else ''}: {redact(reason, secrets)}"
            raise self.fail(self._with_disk_full_note(message, exc)) from None
        finally:
            progress.stop()
            record["model_usage"] = self._model_usage = usage.as_dict()
            self._save_tokens_spent(work_dir, guard)
            if checkpoint is not None:
                checkpoint.stop(final_sync=True)
        if self.stage_context.token_statistics_skipped:
            self.context.log.info(
                f"{self.where}: token statistics are off for the LLM columns (computing them downloads a tokenizer; "
                "DataDesignerResource(token_statistics=True) turns them on)"
            )

        if stage.on_success is not None:
            try:
                selected = Path(stage.on_success(result.artifact_storage.base_dataset_path))
            except Exception as exc:
                raise self.fail(f"on_success raised {redact(repr(exc), secrets)}") from None
        else:
            selected = self._selected_output(result, output_result)
        files = _parquet_files(selected)
        if not files:
            raise self.fail(f"the selected output {str(selected)!r} has no parquet files")
        try:
            analysis = result.load_analysis()
        except Exception:
            analysis = None
        return files, artifacts_dir, analysis, _parquet_files(result.artifact_storage.final_dataset_path)

    def _create_guarded(
        self,
        guard: StageGuard,
        data_designer: Any,
        builder: DataDesignerConfigBuilder,
        num_records: int,
        work_dir: Path,
        resume: ResumeMode,
        record: dict[str, Any],
        checkpoint: RemoteCheckpoint | None,
    ) -> Any:
        """Data Designer's ``create()`` under the stage's stall deadline and token budget (see stage_guard.py)."""
        artifacts_dir = artifact_layout.artifacts_dir(work_dir)
        self.stage_context.guard = guard
        if self._interrupted is not None:  # interrupt() ran before the guard was reachable
            guard.stop(f"stopped: {self._interrupted}")
        guard.start()
        # a lost writer lock (an object store lease another run may take) stops generating, like a stall
        forget_lock = self._lock.when_lost(guard.stop) if self._lock is not None else None
        try:
            try:
                result = data_designer.create(
                    builder,
                    num_records=num_records,
                    dataset_name=artifact_layout.DATASET_NAME,
                    artifact_path=work_dir,
                    resume=resume,
                )
            except Exception as exc:
                if guard.stop_reason is not None or resume != ResumeMode.ALWAYS or "Cannot resume" not in str(exc):
                    raise
                # Data Designer refuses some resumes (interrupted post-processing, changed artifact policy):
                # rather than failing the same way on every retry, start this work fresh. Neither 0.9 nor 1.0 raises a
                # distinct error for it (data_designer_surface lists the message); ResumeMode.IF_POSSIBLE is no
                # substitute: it starts afresh only on a changed config, and into a new timestamped folder.
                self.context.log.warning(
                    f"{self.where}: cannot resume ({redact(str(exc), self.secrets)}); generating from the start"
                )
                shutil.rmtree(artifacts_dir, ignore_errors=True)
                if checkpoint is not None:
                    checkpoint.remove()
                record["resumed"] = False
                result = data_designer.create(
                    builder, num_records=num_records, dataset_name=artifact_layout.DATASET_NAME, artifact_path=work_dir
                )
        except BaseException as exc:
            if guard.stop_reason is None and not isinstance(exc, Exception):
                guard.stop("stopped: the run was interrupted")  # cancel Data Designer's run: no request after it
            if guard.stop_reason is None:
                raise
            # A batch Data Designer salvaged while stopping may lack the records whose requests were refused: it is
            # not finished, whatever its file says, so the next run generates it again (2 s: coarse file clocks).
            for path, _ in resumable_work.short_batches(artifacts_dir, written_since=guard.stopped_at_wall - 2.0):
                path.unlink(missing_ok=True)
                if checkpoint is not None:
                    checkpoint.discard(path)
            if isinstance(exc, OSError) or not isinstance(exc, Exception):
                raise  # a full disk, an interrupt or Dagster's termination keep their own handling
            raise self.fail(self._stopped_message(guard, work_dir)) from None
        finally:
            if forget_lock is not None:
                forget_lock()
            guard.stop_watching()
            self.stage_context.guard = None
        if guard.stop_reason is not None:  # nothing was refused for good: the run finished every record
            self.context.log.warning(
                f"{self.where}: the requests in flight when the stage stopped ({guard.stop_reason}) finished its "
                f"last records ({guard.tokens_total:,} tokens used), so the stage is complete and published"
            )
        return result

    def _early_shutdown_cause(self) -> str:
        run_config = self.resource.data_designer_run_config()
        return (
            f"at least {run_config.shutdown_error_rate:.0%} of the last {run_config.shutdown_error_window} or more "
            "generation tasks failed for good (RunConfig shutdown_error_rate / shutdown_error_window; each failure is "
            "a warning of this step). Fix the failing requests, or set DataDesignerResource(run_config="
            "{'disable_early_shutdown': True}) to keep generating past them"
        )

    def _stage_guard(self, work_dir: Path, builder: DataDesignerConfigBuilder) -> StageGuard:
        """The stall deadline and token budget of this run; fails at once when earlier runs spent the budget."""
        budget = self.config.token_budget if self.config.token_budget is not None else self.stage.token_budget
        problem = check_token_budget(self.config.token_budget)
        if problem:
            raise self.fail(f"run config token_budget {problem}")
        stall_timeout_s = self.stage.stall_timeout_s or self.resource.stall_timeout_s
        for model in used_model_configs(builder):
            timeout = getattr(model.inference_parameters, "timeout", None)
            if timeout is not None and timeout >= stall_timeout_s:
                self.context.log.warning(
                    f"{self.where}: model alias {model.alias!r} allows {timeout:g} s per request, not less than "
                    f"stall_timeout_s={stall_timeout_s:g}: a slow but healthy answer can fail the stage as stalled; "
                    "raise stall_timeout_s"
                )
        # the tokens of earlier runs of this very work (same inputs) count: retries cannot spend the budget again
        guard = StageGuard(
            stall_timeout_s=stall_timeout_s,
            token_budget=budget,
            tokens_before=read_tokens_spent(work_dir),
            spent_file_dir=work_dir,
        )
        if guard.budget_already_spent:
            if not resumable_work.all_batches_finished(artifact_layout.artifacts_dir(work_dir)):
                raise self.fail(self._stopped_message(guard, work_dir))
            # every record was generated (a later step failed): finishing needs no generation request
            self.context.log.info(
                f"{self.where}: earlier runs of this work used {guard.tokens_before:,} tokens of its token_budget "
                f"{budget:,}, and every batch is finished; resuming without a budget, no generation request is needed"
            )
            guard.token_budget = None
        return guard

    def _save_tokens_spent(self, work_dir: Path, guard: StageGuard) -> None:
        try:
            write_tokens_spent(work_dir, guard.tokens_total)
        except OSError as exc:  # never hide the stage's own outcome behind this
            self.context.log.warning(f"{self.where}: could not record the tokens spent in {work_dir}: {exc}")

    def _stopped_message(self, guard: StageGuard, work_dir: Path) -> str:
        kept = resumable_work.finished_batches(work_dir)
        again = (
            "rerun with a larger token_budget to resume them"
            if guard.budget_spent or guard.budget_already_spent
            else "the next materialization resumes them"
        )
        return (
            f"{guard.stop_reason or guard.budget_report()}. Kept {kept} finished batch(es) in {work_dir}; {again} "
            "without requesting their records again"
        )

    def _remote_checkpoint(self, work_dir: Path) -> RemoteCheckpoint | None:
        """The object-store checkpoint of this work (URL base_dir with checkpointing on), else ``None``."""
        io_manager = self.io_manager
        if io_manager.is_local or io_manager.checkpoint_every_s <= 0:
            return None
        stage_dir = io_manager.stage_dir(self.workflow.name, self.stage.name, self.partition)
        return RemoteCheckpoint(stage_dir / CHECKPOINTS_DIR / work_dir.name, work_dir, io_manager.checkpoint_every_s)

    def _run_output_processors(
        self, data_designer, builder: DataDesignerConfigBuilder, result, artifacts_dir: Path, num_records: int
    ):
        output_dir = artifacts_dir / "output-processors"
        if output_dir.exists():
            shutil.rmtree(output_dir)
        processor_builder = output_processors_builder(
            self.stage, builder, str(result.artifact_storage.final_dataset_path / "*.parquet")
        )
        return data_designer.create(
            processor_builder,
            num_records=num_records,
            dataset_name="output-processors",
            artifact_path=artifacts_dir,
        )

    def _selected_output(self, result, output_result) -> Path:
        output = self.stage.output
        if output == "final":
            return output_result.artifact_storage.final_dataset_path
        name = output.removeprefix("processor:")
        source = output_result if name in {p.name for p in self.stage.output_processors} else result
        base = source.artifact_storage.processors_outputs_path
        for candidate in (base / name, base / f"{name}.parquet"):
            if candidate.exists():
                return candidate
        raise self.fail(f"processor {name!r} produced no artifacts (looked in {base})")

    def _check_models(self, builder: DataDesignerConfigBuilder) -> None:
        problem = model_setup_problem(builder, self.resource, self.stage.description)
        if problem:
            raise self.fail(problem)

    def _override_files(self, override: str) -> list[Path]:
        path = Path(override).expanduser()
        files = _parquet_files(path)
        if not files:
            raise self.fail(f"output_override {override!r} is not a parquet file or a directory of parquet files")
        for file in files:
            try:
                pq.read_metadata(file)
            except Exception as exc:
                raise self.fail(f"output_override file {str(file)!r} is not readable parquet: {exc}") from None
        return files

    def _write_empty(self, work_dir: Path, seed: Seed) -> Path:
        import pyarrow as pa

        seed_files = sorted(Path(seed.glob).parent.glob("*.parquet"))
        try:
            schema = pa.unify_schemas([pq.read_schema(f) for f in seed_files]) if seed_files else pa.schema([])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise self.fail(f"upstream schemas do not combine: {exc}") from None
        target = work_dir / "empty.parquet"
        pq.write_table(schema.empty_table(), target)
        return target


def _move_seed(seed: Seed, target: Path) -> Seed:
    """Move a seed built in the run's inputs folder into its work directory (a stable path for resume)."""
    source = Path(seed.glob).parent
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    seed.glob = str(target / "*.parquet")
    return seed


def _data_version_of(dataset: StageDataset) -> str:
    return dataset.record.get("data_version") or parquet_data_version(dataset.files)


def _parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob("*.parquet"))
    if path.is_file():
        return [path]
    return []


def output_processors_builder(stage: Stage, builder: DataDesignerConfigBuilder, seed_path: str):
    """The config that runs ``stage.output_processors`` on the stage's generated dataset (at ``seed_path``)."""
    processor_builder = DataDesignerConfigBuilder(
        model_configs=used_model_configs(builder) or builder.model_configs, tool_configs=builder.tool_configs
    ).with_seed_dataset(LocalFileSeedSource(path=seed_path))
    for processor in stage.output_processors:
        processor_builder.add_processor(processor.model_copy(deep=True))
    return processor_builder


def model_setup_problem(
    builder: DataDesignerConfigBuilder, resource: DataDesignerResource, description: str | None = None
) -> str | None:
    """Why the stage's models cannot be called (a model alias, its provider or the provider's key is missing), else
    ``None``: checked before any generation, by a run and by ``dd-assets preview``. A missing provider's message
    ends with the resource's ``setup_hint``, else the stage's ``description`` (where projects say how to set one up).
    """
    aliases = used_model_aliases(builder)
    if not aliases:
        return None
    configs = {m.alias: m for m in builder.model_configs}
    providers = {p.name for p in resource.providers()}
    for alias in aliases:
        model = configs.get(alias)
        if model is None:
            return f"model alias {alias!r} has no model config in the stage config (field 'config')"
        if model.provider not in providers:
            configured = ", ".join(sorted(providers)) or "none"
            return (
                f"model alias {alias!r} uses provider {model.provider!r}, which is not configured on the "
                f"DataDesignerResource (configured: {configured}); add it to model_providers"
                + (f". {resource.setup_hint}" if resource.setup_hint else "")
                + (f". The stage's description says: {description}" if description and not resource.setup_hint else "")
            )
    try:
        resource.check_provider_keys({configs[alias].provider for alias in aliases})
    except LiteralSecretError as exc:
        return str(exc)
    return None


def models_used(builder: DataDesignerConfigBuilder, resource: DataDesignerResource | None = None) -> str:
    """'model alias 'a' (model 'm') on provider 'p' at <endpoint>, ...' for the LLM columns of a config."""
    configs = {m.alias: m for m in builder.model_configs}
    endpoints = {}
    if resource is not None:
        with contextlib.suppress(Exception):  # naming the endpoint must never hide the failure itself
            endpoints = {p.name: p.endpoint for p in resource.providers()}

    def describe(alias: str) -> str:
        if alias not in configs:
            return f"model alias {alias!r}"
        provider = configs[alias].provider
        at = f" at {endpoints[provider]}" if endpoints.get(provider) else ""
        return f"model alias {alias!r} (model {configs[alias].model!r}) on provider {provider!r}{at}"

    return ", ".join(describe(alias) for alias in used_model_aliases(builder))


def generation_failure_reason(exc: BaseException, failure_report: str | None) -> str:
    """Data Designer's error on one line; where it points to "the warnings above", the reason the provider gave."""
    reason = one_line(str(exc))
    if failure_report and "warnings above" in reason:
        shutdown = "Data Designer stopped early, " if "early shutdown" in reason else ""
        return f"{shutdown}no record was generated; {failure_report}"
    return reason


def one_line(message: str) -> str:
    """A Data Designer error message on one line: its ``|----------`` boxes and ``| Cause:`` margins removed."""
    text = re.sub(r"\|-{3,}", " ", message.replace("🛑", ""))
    text = re.sub(r"(^|\n)\s*\|", " ", text)
    return " ".join(text.split())
