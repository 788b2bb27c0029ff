"""dagster-dask's executor, made safe for concurrent runs of one job (``pip install "dd_assets[dask]"``).

dagster-dask submits every step to Dask under the task key ``<job name>.<step key>``. Dask runs a key once while
a future holds it, so when two runs of the same job are on the cluster at once (two partitions of a stage, a
backfill, a sensor launching runs) only the first run's step executes, and the second run is marked successful
with the first run's events: its partition is never generated. This is dagster-io/dagster#21418, unfixed in
dagster-dask 0.29. Partitioned stages make such concurrent runs the normal case, so dd_assets ships the same
executor with the run id in every task key; its configuration is dagster-dask's, unchanged::

    from dd_assets.run.dask_executor import dask_executor

    executor = dask_executor.configured({"cluster": {"existing": {"address": "tcp://scheduler:8786"}}})
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator

import dagster as dg
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster_dask.executor import DaskExecutor
from dagster_dask.executor import dask_executor as _dagster_dask_executor


class RunScopedDaskExecutor(DaskExecutor):
    """dagster-dask's ``DaskExecutor`` whose Dask task keys are ``<job name>.<run id>.<step key>``."""

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan) -> Iterator[dg.DagsterEvent]:
        # dagster-dask builds the key from plan_context.job_name: hand it a shallow copy that names the run too.
        scoped = copy.copy(plan_context)
        scoped.__class__ = _run_scoped(type(plan_context))
        yield from super().execute(scoped, execution_plan)


@functools.cache
def _run_scoped(context_class: type) -> type:
    class RunScopedContext(context_class):
        @property
        def job_name(self) -> str:
            return f"{super().job_name}.{self.dagster_run.run_id}"

    return RunScopedContext


@dg.executor(
    name="dask",
    config_schema=_dagster_dask_executor.config_schema,
    requirements=dg.multiple_process_executor_requirements(),
)
def dask_executor(init_context: dg.InitExecutorContext) -> RunScopedDaskExecutor:
    """dagster-dask's executor with run-scoped task keys (see the module docstring); same configuration."""
    ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
    return RunScopedDaskExecutor(cluster_type, cluster_configuration)
