"""Running one stage: seed, generate with the shared DataDesigner, select the output, describe it.

Mirrors ``CompositeWorkflow.run()`` for one stage (Data Designer's
``data_designer/interface/composite_workflow.py``) and goes past it: joins, external upstreams,
run-config overrides, resume keyed by the generation inputs, a completion guard before publishing, and an
output the IO manager publishes while this run still holds the stage's lock.

:class:`StageRun` holds the stage's lock and sequences the jobs of a run: its inputs
(:mod:`dd_assets.run.stage_inputs`), its generation (:mod:`dd_assets.run.generation`) or the output that replaces
it (:mod:`dd_assets.run.stage_output`), and what it hands Dagster (:mod:`dd_assets.run.outcome`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from dd_assets.engine.stage_context import running_stage
from dd_assets.run.generation import Generated, Generation
from dd_assets.run.generation_failures import with_disk_full_note
from dd_assets.run.outcome import check_completion, empty_upstream_output, first_record, stage_result
from dd_assets.run.resumable_work import inputs_dir_name
from dd_assets.run.stage_cost import spend_of_failure
from dd_assets.run.stage_inputs import StageInputs, prepare_inputs
from dd_assets.run.stage_output import override_files, selected_files
from dd_assets.run.stage_scope import StageFailure, StageScope
from dd_assets.storage.dagster_agreement import reconcile
from dd_assets.storage.records import StageRecordUnreadableError, StageStorageError
from dd_assets.storage.stage_lock import StageBusyError, StageLock


@dataclass
class StageRun(StageScope):
    """One materialization of one stage."""

    check_results: list[dg.AssetCheckResult] = field(default_factory=list)
    # set while running, for the failure paths
    _lock: StageLock | None = field(default=None, init=False)
    _inputs: StageInputs | None = field(default=None, init=False)

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
                metadata, observation = spend_of_failure(self)
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

    def close(self) -> None:
        """Release the stage's lock; call it once Dagster has handled the output (or the run failed)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _agree_with_dagster(self, lock: StageLock) -> None:
        """Under the lock: set an unreadable record aside, and record a commit a killed run left unrecorded."""
        workflow, stage = self.workflow.name, self.stage.name
        try:
            message = reconcile(
                self.io_manager.store, workflow, stage, self.asset_key, self.context.instance, lock, self.partition
            )
        except StageRecordUnreadableError as exc:
            moved = self.io_manager.set_aside_unreadable_record(workflow, stage, self.partition)
            self.context.log.warning(f"{exc}; moved it to {moved} and treating the stage as unpublished")
            return
        if message:
            self.context.log.warning(message)

    def _run_guarded(self, upstream_values: dict[str | dg.AssetKey, Any], lock: StageLock) -> dg.Output:
        work_root = self.io_manager.work_root(self.workflow.name, self.stage.name, self.partition)
        inputs_dir = work_root / inputs_dir_name(self.context.run.run_id)
        try:
            return self._run(upstream_values, inputs_dir, lock)
        except StageFailure:
            shutil.rmtree(inputs_dir, ignore_errors=True)
            raise
        except (OSError, StageStorageError) as exc:
            shutil.rmtree(inputs_dir, ignore_errors=True)
            message = f"storage error ({exc}); the published output is unchanged"
            inputs = self._inputs
            if inputs is not None:
                made_requests = bool(self.stage_context.usage.as_dict())
                message = with_disk_full_note(
                    message, exc, inputs.work_dir, work_was_new=inputs.work_was_new, made_requests=made_requests
                )
            raise self.fail(message) from None
        except BaseException:
            shutil.rmtree(inputs_dir, ignore_errors=True)  # the work directory itself stays, for resume
            raise

    def _run(self, upstream_values: dict[str | dg.AssetKey, Any], inputs_dir: Path, lock: StageLock) -> dg.Output:
        started = time.monotonic()
        self._inputs = inputs = prepare_inputs(self, upstream_values, inputs_dir)
        inputs.open_work_dir(self)
        record = first_record(self, inputs)
        generated: Generated | None = None
        if self.config.output_override:
            files = override_files(self, self.config.output_override)
            record.update(status="overridden", num_records_actual=0, output_override=self.config.output_override)
        elif inputs.seed is not None and inputs.seed.num_rows == 0:
            files = empty_upstream_output(self, inputs, record)
        else:
            generated = Generation(self, inputs, lock, record).run()
            files = selected_files(self, generated.result, generated.output_result)
            check_completion(self, record, inputs.work_dir)
        output, self.check_results = stage_result(
            self, inputs, record, files, generated, lock=lock, inputs_dir=inputs_dir, started=started
        )
        return output
