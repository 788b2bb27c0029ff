"""Concurrent execution: one Dagster step runs a workflow's selected stages, each as soon as it can.

A stage starts once every upstream stage selected in the same run is published; unselected upstream stages are
read from storage. Ready stages generate at the same time in worker threads, on the process's one shared
``DataDesigner`` (one model registry, one health check and one request admission per alias). Each stage is still
its own asset: the step yields a stage's output the moment it finishes, Dagster publishes and records it, and
only then is the stage's lock released and its downstream stages started. A failed stage stops only its
downstream stages; the others finish and publish, and the step then fails naming every failed stage and why.

Each stage runs through the same :class:`~dd_assets.run.stage_run.StageRun` as in the per-stage mode, so resume,
atomic publish, overrides, joins, empty outputs and checks behave the same.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from dd_assets.engine.resource import DataDesignerResource
from dd_assets.engine.stage_guard import DRAIN_GRACE_S
from dd_assets.run.stage_cost import spend_of_failure
from dd_assets.run.stage_run import StageRun
from dd_assets.run.stage_scope import StageFailure, StageRunConfig
from dd_assets.spec.secrets import redact
from dd_assets.spec.workflow import Stage, Workflow
from dd_assets.storage.dagster_agreement import reconcile_if_idle
from dd_assets.storage.io_manager import StageParquetIOManager

STOP_GRACE_S = DRAIN_GRACE_S
"""How long a step that ends early waits for its stopped stages to end (they send no request meanwhile)."""
RESUME_RETRY_TAG = "dagster/is_resume_retry"  # set by Dagster on a re-execution from failure (UI, GraphQL)


class WorkflowRunConfig(dg.Config):
    """Per-run settings of a concurrently executed workflow (launchpad / ``--config``).

    Attributes:
        stages: per-stage settings by stage name (``num_records``, ``output_override``), as in the per-stage mode.
        max_concurrent_stages: at most this many stages generate at once in this run (overrides the workflow's).
    """

    stages: dict[str, StageRunConfig] = {}
    max_concurrent_stages: int | None = None


@dataclass
class StagePlan:
    """What the concurrent runner needs to know of one stage."""

    stage: Stage
    asset_key: dg.AssetKey
    code_version: str
    upstream_keys: dict[str | dg.AssetKey, dg.AssetKey]


@dataclass
class ConcurrentWorkflowRun:
    """One execution of a workflow's selected stages in one step."""

    context: dg.AssetExecutionContext
    workflow: Workflow
    plans: dict[str, StagePlan]  # by stage name, in dependency order
    resource: DataDesignerResource
    io_manager: StageParquetIOManager
    config: WorkflowRunConfig
    max_concurrent_stages: int | None = None
    _finished: queue.Queue = field(default_factory=queue.Queue)

    @property
    def where(self) -> str:
        return f"workflow {self.workflow.name!r}"

    def execute(self, external_values: dict[dg.AssetKey, Any]) -> Iterator[Any]:
        """Run the selected stages; yield each stage's output and check results as it finishes."""
        unknown = sorted(set(self.config.stages) - set(self.plans))
        if unknown:
            raise StageFailure(
                description=f"{self.where}: run config names unknown stage(s) {', '.join(map(repr, unknown))} "
                f"(stages: {', '.join(self.plans)})"
            )
        cap = self.config.max_concurrent_stages
        if cap is not None and (isinstance(cap, bool) or cap < 1):
            raise StageFailure(
                description=f"{self.where}: run config max_concurrent_stages must be a whole number >= 1 (or unset), "
                f"got {cap!r}"
            )
        selected = [name for name, plan in self.plans.items() if plan.asset_key in self.context.selected_asset_keys]
        cap = cap or self.max_concurrent_stages or len(selected) or 1
        current = self._current_in_lineage(selected)
        pending = [name for name in selected if name not in current]
        running: dict[str, StageRun] = {}
        published: set[str] = set(current)  # downstream stages read them from storage
        failed: dict[str, str] = {}
        skipped: dict[str, str] = {}
        spend: dict[str, dict[str, Any]] = {}  # what each failed stage spent (failure metadata)
        pool = ThreadPoolExecutor(max_workers=cap, thread_name_prefix=f"dd-assets-{self.workflow.name}")
        futures: dict[str, Future] = {}
        stopping: str | None = None  # why the step ends early (terminated, a failed publish): the stages still
        # generating stop too, since nothing they generate could be published by this step
        try:
            while pending or running:
                for name in list(pending):
                    blocked = [u for u in self._upstream_stages(name) if u in failed or u in skipped]
                    if blocked:
                        pending.remove(name)
                        cause = "failed" if blocked[0] in failed else "was not run"
                        skipped[name] = f"not run: upstream stage {blocked[0]!r} {cause}"
                for name in list(pending):
                    if len(running) >= cap:
                        break
                    if all(u in published or u not in selected for u in self._upstream_stages(name)):
                        pending.remove(name)
                        running[name] = self._stage_run(name)
                        futures[name] = pool.submit(self._work, name, running[name], external_values)
                if not running:
                    break  # nothing left can start
                name, output, error = self._finished.get()
                run = running.pop(name)
                futures.pop(name, None)
                if error is not None:
                    run.close()
                    failed[name] = error
                    self.context.log.error(f"{self.where}, stage {name!r} failed: {error}")
                    spend[name], observation = spend_of_failure(run)
                    if observation is not None:
                        yield observation
                    continue
                try:
                    yield output  # Dagster publishes the stage and records its materialization here
                finally:
                    run.close()
                selected_checks = self.context.selected_asset_check_keys
                yield from (
                    result
                    for result in run.check_results
                    if dg.AssetCheckKey(result.asset_key, result.check_name) in selected_checks
                )
                published.add(name)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, dg.DagsterExecutionInterruptedError)):
                stopping = "the run was terminated"
            elif isinstance(exc, GeneratorExit):  # Dagster abandons the step: publishing an output failed
                stopping = "the step ended before the stage could be published"
            else:
                stopping = f"the step failed ({type(exc).__name__})"
            raise
        finally:
            if stopping is not None:
                self._stop_running(running, futures, stopping)
            pool.shutdown(wait=stopping is None, cancel_futures=True)
            for name, run in running.items():
                future = futures.get(name)
                if future is None or future.done():
                    run.close()
                else:  # still unwinding past the grace: its worker releases the stage's lock when it ends
                    future.add_done_callback(lambda _, run=run: run.close())
        if failed or skipped:
            lines = [f"stage {name!r}: {reason}" for name, reason in {**failed, **skipped}.items()]
            raise StageFailure(
                description=f"{self.where}: {len(failed)} stage(s) failed"
                + (f", {len(skipped)} not run" if skipped else "")
                + f" ({len(published - current)} published). "
                + "; ".join(lines),
                metadata=_failed_spend_metadata(spend),
            )

    def _current_in_lineage(self, selected: list[str]) -> set[str]:
        """In a re-execution from failure: the selected stages an earlier run of this lineage published and that are
        still current (same code version, same upstream data versions, same run config). Dagster re-executes the
        whole step, so without this every published stage would be generated, and paid for, again."""
        run = self.context.run
        if run.parent_run_id is None or not self._resumes_parent(run):
            return set()
        lineage: dict[str, dg.DagsterRun] = {}
        parent_id: str | None = run.parent_run_id
        while parent_id is not None and parent_id not in lineage:
            parent = self.context.instance.get_run_by_id(parent_id)
            if parent is None:
                break
            lineage[parent_id] = parent
            parent_id = parent.parent_run_id
        current: set[str] = set()
        for name in selected:  # in dependency order
            published_by = self._published_in_lineage(name, lineage, selected, current)
            if published_by is not None:
                current.add(name)
                self.context.log.info(
                    f"{self.where}: stage {name!r} is current (published by run {published_by} of this run's "
                    "lineage, same code version, upstream data versions and run config); read, not generated again"
                )
        return current

    def _resumes_parent(self, run: dg.DagsterRun) -> bool:
        """Whether ``run`` re-executes its parent from failure (or a selection of its steps), not all of it: the
        UI's resume tag, or an execution plan that carries the parent's execution state."""
        if run.tags.get(RESUME_RETRY_TAG) == "true":
            return True
        try:
            snapshot = self.context.instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
        except Exception:  # noqa: BLE001 - no snapshot: treat it as a full re-execution
            return False
        known = getattr(snapshot, "initial_known_state", None)
        return known is not None and getattr(known, "parent_state", None) is not None

    def _published_in_lineage(
        self, name: str, lineage: dict[str, dg.DagsterRun], selected: list[str], current: set[str]
    ) -> str | None:
        """The run of ``lineage`` whose published version of stage ``name`` is still current, else ``None``."""
        plan = self.plans[name]
        if any(isinstance(dep, dg.AssetKey) for dep in plan.stage.depends_on):
            return None  # an external upstream's version is only known once it is loaded: generate again
        if any(dep in selected and dep not in current for dep in plan.stage.upstream_stage_names):
            return None  # an upstream is generated again in this run
        try:
            record = self.io_manager.read_record(self.workflow.name, name)
            if not record or record.get("run_id") not in lineage or record.get("code_version") != plan.code_version:
                return None
            for dep, upstream in (record.get("upstream") or {}).items():
                stored = self.io_manager.read_record(self.workflow.name, dep)
                if not stored or stored.get("data_version") != upstream.get("data_version"):
                    return None
        except Exception:  # noqa: BLE001 - an unreadable record is not current; the stage run handles it
            return None
        run_id = record["run_id"]
        if _stage_run_config(lineage[run_id], self.context.op_def.name, name) != _stage_run_config(
            self.context.run, self.context.op_def.name, name
        ):
            return None
        latest = self.context.instance.get_latest_materialization_event(plan.asset_key)
        if latest is None or latest.run_id != run_id:
            return None  # Dagster's record is not that version (the stage run reconciles it)
        return run_id

    def _stop_running(self, running: dict[str, StageRun], futures: dict[str, Future], reason: str) -> None:
        """Stop every running stage's generation (its guard refuses further requests and cancels Data Designer's
        scheduler; finished batches stay for resume), then wait at most the drain grace for them to end."""
        if not running:
            return
        for run in running.values():
            run.interrupt(reason)
        self.context.log.warning(
            f"{self.where}: {reason}; stopping {len(running)} running stage(s) ({', '.join(map(repr, running))})"
        )
        wait([futures[name] for name in running if name in futures], timeout=STOP_GRACE_S)

    def _upstream_stages(self, name: str) -> list[str]:
        return self.plans[name].stage.upstream_stage_names

    def _stage_run(self, name: str) -> StageRun:
        plan = self.plans[name]
        return StageRun(
            context=self.context,
            workflow=self.workflow,
            stage=plan.stage,
            config=self.config.stages.get(name, StageRunConfig()),
            code_version=plan.code_version,
            resource=self.resource,
            io_manager=self.io_manager,
            upstream_keys=plan.upstream_keys,
            asset_key=plan.asset_key,
            output_name=self.context.assets_def.get_output_name_for_asset_key(plan.asset_key),
        )

    def _work(self, name: str, run: StageRun, external_values: dict[dg.AssetKey, Any]) -> None:
        """In a worker thread: take the stage's lock, read its upstreams, generate; hand the output back."""
        try:
            run.open()
            upstream_values = {dep: self._upstream_value(dep, run, external_values) for dep in run.stage.depends_on}
            self._finished.put((name, run.produce(upstream_values), None))
        except BaseException as exc:  # noqa: BLE001 - every failure is reported by the main thread
            message = exc.description if isinstance(exc, dg.Failure) else f"{type(exc).__name__}: {exc}"
            self._finished.put((name, None, redact(str(message), run.secrets)))

    def _upstream_value(self, dep: str | dg.AssetKey, run: StageRun, external_values: dict[dg.AssetKey, Any]) -> Any:
        key = run.upstream_keys[dep]
        if isinstance(dep, dg.AssetKey):
            return external_values[key]
        reconcile_if_idle(self.io_manager.store, self.workflow.name, dep, key, self.context.instance, self.context.log)
        return self.io_manager.read_stage(self.workflow.name, dep, partitions_def=None)  # no partitions here


def _failed_spend_metadata(spend: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The failure metadata of a concurrent step: what each failed stage spent, and the sum over them."""
    spend = {name: metadata for name, metadata in spend.items() if metadata}
    if not spend:
        return {}
    by_stage = {name: {k.removeprefix("dd_assets/"): v.value for k, v in m.items()} for name, m in spend.items()}
    metadata: dict[str, Any] = {"dd_assets/failed_stages_spend": dg.MetadataValue.json(by_stage)}
    for key in ("input_tokens", "output_tokens", "health_check_tokens"):
        metadata[f"dd_assets/{key}"] = dg.MetadataValue.int(sum(s.get(key, 0) for s in by_stage.values()))
    for key in ("cost_usd", "health_check_cost_usd"):
        if any(key in s for s in by_stage.values()):
            metadata[f"dd_assets/{key}"] = dg.MetadataValue.float(
                round(sum(s.get(key, 0.0) for s in by_stage.values()), 6)
            )
    return metadata


def _stage_run_config(run: dg.DagsterRun, op_name: str, stage: str) -> dict[str, Any]:
    """A stage's run config (``num_records``, ``output_override``, ``token_budget``) in a run, defaults filled in."""
    config = ((run.run_config or {}).get("ops", {}).get(op_name) or {}).get("config") or {}
    return StageRunConfig(**(config.get("stages") or {}).get(stage, {})).model_dump()
