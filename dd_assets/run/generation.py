"""One stage's generation: Data Designer's ``create()`` under the stage's guard, resuming, checkpointing, reporting.

The stage's models are checked and registered on the shared ``DataDesigner``; the run resumes the finished batches
of its work (:mod:`dd_assets.run.resume`), generates under its stall deadline and token budget
(:mod:`dd_assets.run.stage_limits`) and while it holds the stage's lock, and hands each finished batch to its
progress reports and its object-store checkpoint through ``create(..., on_batch_complete=...)``. Failures become
one :class:`~dd_assets.run.stage_scope.StageFailure` that names the models and keeps the finished batches.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_designer.config.config_builder import DataDesignerConfigBuilder
from data_designer.config.run_config import ResumeMode
from data_designer.interface.errors import DataDesignerEarlyShutdownError

from dd_assets.engine import artifact_layout
from dd_assets.engine.data_designer_surface import creation_outcome
from dd_assets.engine.log_bridge import data_designer_logs_to_dagster
from dd_assets.engine.stage_guard import StageGuard
from dd_assets.run import resumable_work
from dd_assets.run.generation_failures import early_shutdown_cause, generation_failure_reason, with_disk_full_note
from dd_assets.run.model_setup import model_setup_problem, models_used
from dd_assets.run.progress import StageProgress, engine_event_reporter
from dd_assets.run.remote_checkpoint import RemoteCheckpoint
from dd_assets.run.resume import remote_checkpoint, resume_mode
from dd_assets.run.seeds import builder_with_seed
from dd_assets.run.stage_inputs import StageInputs
from dd_assets.run.stage_limits import save_tokens_spent, stage_guard, stopped_message
from dd_assets.run.stage_output import output_processors_builder
from dd_assets.run.stage_scope import StageFailure, StageScope
from dd_assets.spec.secrets import redact
from dd_assets.storage.stage_lock import StageLock


@dataclass
class Generated:
    """What a generation produced: Data Designer's results, and those of the output processors run after it."""

    result: Any
    output_result: Any
    progress: StageProgress


class Generation:
    """The generation of one stage run (see the module docstring)."""

    def __init__(self, scope: StageScope, inputs: StageInputs, lock: StageLock, record: dict[str, Any]) -> None:
        self.scope = scope
        self.inputs = inputs
        self.lock = lock
        self.record = record
        self.work_dir = inputs.work_dir
        self.artifacts_dir = artifact_layout.artifacts_dir(inputs.work_dir)

    def run(self) -> Generated:
        """Generate the stage's records (and run its output processors); fills the record's counts and usage."""
        scope, stage, record, work_dir = self.scope, self.scope.stage, self.record, self.work_dir
        if self.inputs.seed is not None and stage.builder.get_seed_config() is not None:
            scope.context.log.warning(f"{scope.where}: the config's own seed is replaced by the upstream output")
        builder = builder_with_seed(
            stage, self.inputs.seed, scope.selection_strategy, own_seed_block=scope.partition_block
        )
        problem = model_setup_problem(builder, scope.resource, stage.description)
        if problem:
            raise scope.fail(problem)
        data_designer = scope.resource.get_data_designer()
        try:
            data_designer.register_stage_models(builder, owner=scope.where)
        except ValueError as exc:
            raise scope.fail(str(exc).removeprefix(f"{scope.where}: ")) from None

        checkpoint = remote_checkpoint(scope, work_dir)
        resume = resume_mode(scope, work_dir, checkpoint)
        record["resumed"] = resume == ResumeMode.ALWAYS
        guard = stage_guard(scope, work_dir, builder)
        usage, secrets = scope.stage_context.usage, scope.secrets
        progress = StageProgress(
            where=scope.where,
            work_dir=work_dir,
            num_records=self.inputs.num_records,
            buffer_size=scope.resource.data_designer_run_config().buffer_size,
            usage=usage.as_dict,
            report=engine_event_reporter(scope.context),
            every_s=scope.resource.progress_every_s,
        )
        progress.start()
        if checkpoint is not None:
            checkpoint.start()
        try:
            prefix = f"[{scope.workflow.name}/{stage.name}] "
            with data_designer_logs_to_dagster(scope.context, prefix, secrets, stage_label=scope.stage_context.label):
                result = self._create_guarded(guard, data_designer, builder, resume, progress, checkpoint)
                self._read_outcome(result)
                output_result = result
                if stage.output_processors:
                    output_result = self._run_output_processors(data_designer, builder, result)
        except (StageFailure, OSError):
            raise
        except DataDesignerEarlyShutdownError:
            models = models_used(builder, scope.resource)
            report = guard.failure_report()  # what failed, which Data Designer leaves to the warnings
            raise scope.fail(
                f"Data Designer shut generation down early before any record was finished"
                f"{f' ({models})' if models else ''}: {f'{redact(report, secrets)}; ' if report else ''}"
                f"{early_shutdown_cause(scope.resource)}"
            ) from None
        except Exception as exc:
            models = models_used(builder, scope.resource)
            reason = generation_failure_reason(exc, guard.failure_report())
            message = f"generation failed{f' ({models})' if models else ''}: {redact(reason, secrets)}"
            made_requests = bool(usage.as_dict())
            note = with_disk_full_note(
                message, exc, work_dir, work_was_new=self.inputs.work_was_new, made_requests=made_requests
            )
            raise scope.fail(note) from None
        finally:
            progress.stop()
            record["model_usage"] = usage.as_dict()
            save_tokens_spent(scope, work_dir, guard)
            if checkpoint is not None:
                checkpoint.stop(final_sync=True)
        if scope.stage_context.token_statistics_skipped:
            scope.context.log.info(
                f"{scope.where}: token statistics are off for the LLM columns (computing them downloads a tokenizer; "
                "DataDesignerResource(token_statistics=True) turns them on)"
            )
        return Generated(result, output_result, progress)

    def _read_outcome(self, result: Any) -> None:
        """Record how many records Data Designer generated, and whether it resumed or shut down early."""
        outcome = creation_outcome(result, self.inputs.num_records)
        self.record["num_records_actual"] = outcome.actual
        if outcome.resumed is not None:
            self.record["resumed"] = outcome.resumed  # Data Designer 1.0 says which resume mode it applied
        if outcome.early_shutdown is not None:
            self.record["early_shutdown"] = outcome.early_shutdown
        if outcome.early_shutdown and outcome.is_partial:
            self.scope.context.log.warning(
                f"{self.scope.where}: Data Designer shut generation down early after {outcome.actual} of "
                f"{outcome.requested} records: {early_shutdown_cause(self.scope.resource)}"
            )

    def _create_guarded(
        self,
        guard: StageGuard,
        data_designer: Any,
        builder: DataDesignerConfigBuilder,
        resume: ResumeMode,
        progress: StageProgress,
        checkpoint: RemoteCheckpoint | None,
    ) -> Any:
        """Data Designer's ``create()`` under the stage's stall deadline and token budget (see stage_guard.py)."""
        scope = self.scope

        def batch_completed(path: Path | str) -> None:  # Data Designer's on_batch_complete: both only take note
            try:
                progress.batch_completed(path)
                if checkpoint is not None:
                    checkpoint.batch_completed(path)
            except Exception as exc:  # noqa: BLE001 - an exception here would abort Data Designer's run
                scope.context.log.warning(f"{scope.where}: noting finished batch {path} failed: {exc}")

        def create(resume: ResumeMode) -> Any:
            return data_designer.create(
                builder,
                num_records=self.inputs.num_records,
                dataset_name=artifact_layout.DATASET_NAME,
                artifact_path=self.work_dir,
                resume=resume,
                on_batch_complete=batch_completed,
            )

        scope.stage_context.guard = guard
        if scope.interrupted is not None:  # interrupt() ran before the guard was reachable
            guard.stop(f"stopped: {scope.interrupted}")
        guard.start()
        # a lost writer lock (an object store lease another run may take) stops generating, like a stall
        forget_lock = self.lock.when_lost(guard.stop)
        try:
            try:
                result = create(resume)
            except Exception as exc:
                if guard.stop_reason is not None or resume != ResumeMode.ALWAYS or "Cannot resume" not in str(exc):
                    raise
                # Data Designer refuses some resumes (interrupted post-processing, changed artifact policy):
                # rather than failing the same way on every retry, start this work fresh. Neither 0.9 nor 1.0 raises a
                # distinct error for it (data_designer_surface lists the message); ResumeMode.IF_POSSIBLE is no
                # substitute: it starts afresh only on a changed config, and into a new timestamped folder.
                scope.context.log.warning(
                    f"{scope.where}: cannot resume ({redact(str(exc), scope.secrets)}); generating from the start"
                )
                shutil.rmtree(self.artifacts_dir, ignore_errors=True)
                if checkpoint is not None:
                    checkpoint.remove()
                self.record["resumed"] = False
                result = create(ResumeMode.NEVER)
        except BaseException as exc:
            if guard.stop_reason is None and not isinstance(exc, Exception):
                guard.stop("stopped: the run was interrupted")  # cancel Data Designer's run: no request after it
            if guard.stop_reason is None:
                raise
            # A batch Data Designer salvaged while stopping may lack the records whose requests were refused: it is
            # not finished, whatever its file says, so the next run generates it again (2 s: coarse file clocks).
            for path, _ in resumable_work.short_batches(self.artifacts_dir, written_since=guard.stopped_at_wall - 2.0):
                path.unlink(missing_ok=True)
                if checkpoint is not None:
                    checkpoint.discard(path)
            if isinstance(exc, OSError) or not isinstance(exc, Exception):
                raise  # a full disk, an interrupt or Dagster's termination keep their own handling
            raise scope.fail(stopped_message(guard, self.work_dir)) from None
        finally:
            forget_lock()
            guard.stop_watching()
            scope.stage_context.guard = None
        if guard.stop_reason is not None:  # nothing was refused for good: the run finished every record
            scope.context.log.warning(
                f"{scope.where}: the requests in flight when the stage stopped ({guard.stop_reason}) finished its "
                f"last records ({guard.tokens_total:,} tokens used), so the stage is complete and published"
            )
        return result

    def _run_output_processors(self, data_designer: Any, builder: DataDesignerConfigBuilder, result: Any) -> Any:
        output_dir = self.artifacts_dir / artifact_layout.OUTPUT_PROCESSORS_DATASET
        if output_dir.exists():
            shutil.rmtree(output_dir)
        processor_builder = output_processors_builder(
            self.scope.stage, builder, str(result.artifact_storage.final_dataset_path / "*.parquet")
        )
        return data_designer.create(
            processor_builder,
            num_records=self.record["num_records_actual"],
            dataset_name=artifact_layout.OUTPUT_PROCESSORS_DATASET,
            artifact_path=self.artifacts_dir,
        )
