"""The checks of a whole workflow, run when it is built: its fields, its stages, their graph and their columns."""

from __future__ import annotations

import graphlib
from typing import TYPE_CHECKING

from dd_assets.spec.column_flow import workflow_column_flow
from dd_assets.spec.definition_error import WorkflowDefinitionError
from dd_assets.spec.field_specs import check_plain_values
from dd_assets.spec.names import check_name, stage_op_name, upstream_name
from dd_assets.spec.stage_rules import check_asset_attributes, check_stage
from dd_assets.spec.validation import check_column_flow, check_model_aliases

if TYPE_CHECKING:
    from dd_assets.spec.workflow import Workflow


def check_workflow(workflow: Workflow) -> None:
    """Check a workflow of :class:`~dd_assets.spec.workflow.Stage` objects; fills in its ``column_flow``."""
    check_name(workflow.name, "workflow name", workflow=None, stage=None)

    def fail(message: str, field_name: str) -> None:
        raise WorkflowDefinitionError(message, workflow=workflow.name, field=field_name)

    check_plain_values(workflow, fail)
    check_asset_attributes(workflow, fail)
    if not workflow.stages:
        raise WorkflowDefinitionError("a workflow needs at least one stage", workflow=workflow.name, field="stages")
    seen: set[str] = set()
    op_names: dict[str, str] = {}
    for stage in workflow.stages:
        check_name(stage.name, "stage name", workflow=workflow.name, stage=None)
        if stage.name in seen:
            raise WorkflowDefinitionError(
                "duplicate stage name", workflow=workflow.name, stage=stage.name, field="name"
            )
        seen.add(stage.name)
        op_name = stage_op_name(workflow.name, stage.name)
        if op_name in op_names:
            raise WorkflowDefinitionError(
                f"stages {op_names[op_name]!r} and {stage.name!r} both become the Dagster op {op_name!r} "
                "('-' turns into '_'); rename one",
                workflow=workflow.name,
                stage=stage.name,
                field="name",
            )
        op_names[op_name] = stage.name
    for stage in workflow.stages:
        check_stage(workflow.name, stage, stage_names=seen, max_num_records=workflow.max_num_records)
    _check_cycles(workflow)
    _check_partitioned_upstreams(workflow)

    check_model_aliases([workflow])
    flow = workflow_column_flow(workflow)
    check_column_flow(workflow, flow)
    object.__setattr__(workflow, "column_flow", flow)


def _check_partitioned_upstreams(workflow: Workflow) -> None:
    """A partitioned stage's upstream stages are all partitioned like it, or none is; no concurrent execution."""
    by_name = {s.name: s for s in workflow.stages}
    for stage in workflow.stages:
        if stage.partitions_def is None:
            continue
        if workflow.execution == "concurrent":
            raise WorkflowDefinitionError(
                "partitioned stages run one partition per Dagster step; use execution 'per_stage' for this workflow",
                workflow=workflow.name,
                stage=stage.name,
                field="partitions",
            )
        if isinstance(stage.partitions, int) and stage.num_records is not None and stage.num_records < stage.partitions:
            raise WorkflowDefinitionError(
                f"num_records {stage.num_records} is split over {stage.partitions} partitions, which leaves some "
                "partitions no records",
                workflow=workflow.name,
                stage=stage.name,
                field="num_records",
            )
        upstreams = [by_name[name] for name in stage.upstream_stage_names]
        alike = [u.name for u in upstreams if u.partitions_def == stage.partitions_def]
        if alike and len(alike) != len(stage.depends_on):
            others = [upstream_name(d) for d in stage.depends_on if d not in alike]
            raise WorkflowDefinitionError(
                f"upstreams {alike} are partitioned like this stage (partition k reads their partition k) but "
                f"{others} are not; partition the upstreams alike, or none of them (then each partition takes its "
                "block of the combined seed)",
                workflow=workflow.name,
                stage=stage.name,
                field="depends_on",
            )


def _check_cycles(workflow: Workflow) -> None:
    """A dependency cycle, named from its first stage in declaration order."""
    graph = {stage.name: stage.upstream_stage_names for stage in workflow.stages}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1][:-1]  # each stage an upstream of the next; the first repeated at the end
        order = [stage.name for stage in workflow.stages]
        start = cycle.index(min(cycle, key=order.index))
        cycle = cycle[start:] + cycle[:start]
        raise WorkflowDefinitionError(
            "dependency cycle: " + " -> ".join([*cycle, cycle[0]]),
            workflow=workflow.name,
            stage=cycle[0],
            field="depends_on",
        ) from None
