"""build_workflow_definitions: workflows, the shared resource and the IO manager as one ``dg.Definitions``."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from dd_assets.assets.asset_factory import build_workflow_assets
from dd_assets.assets.load_errors import load_error_asset
from dd_assets.assets.translator import IO_MANAGER_KEY, RESOURCE_KEY, DataDesignerStageTranslator
from dd_assets.engine.resource import DataDesignerResource
from dd_assets.spec.definition_error import WorkflowDefinitionError
from dd_assets.spec.field_rules import EXECUTION_MODES
from dd_assets.spec.load_failures import WorkflowLoadFailure
from dd_assets.spec.names import stage_op_name
from dd_assets.spec.validation import check_model_aliases
from dd_assets.spec.workflow import Workflow
from dd_assets.storage.io_manager import StageParquetIOManager


def build_workflow_definitions(
    workflows: Workflow | Iterable[Workflow],
    *more_workflows: Workflow,
    data_designer: DataDesignerResource | None = None,
    io_manager: StageParquetIOManager | None = None,
    translator: DataDesignerStageTranslator | None = None,
    executor: dg.ExecutorDefinition | None = None,
    execution: str | None = None,
    max_concurrent_stages: int | None = None,
    load_failures: Iterable[WorkflowLoadFailure] = (),
) -> dg.Definitions:
    """Dagster definitions for one or more workflows.

    Args:
        workflows: a ``Workflow`` or an iterable of them (more may follow positionally).
        data_designer: the shared resource (key ``"data_designer"``); Data Designer's defaults when omitted.
        io_manager: the stage IO manager (key ``"dd_stage_io_manager"``); ``base_dir="data"`` when omitted.
        translator: builds each stage's ``AssetSpec``.
        executor: defaults to the in-process executor, so one resource instance serves the whole run.
        execution: ``"per_stage"`` (one step per stage) or ``"concurrent"`` (one step per workflow runs ready
            stages at the same time); overrides each workflow's own ``execution`` when given.
        max_concurrent_stages: in concurrent execution, at most this many stages at once (overrides each
            workflow's own cap when given).
        load_failures: workflow files that did not load (``load_workflow_dir(folder, failures=[])``): each becomes
            an asset in the group ``load_errors`` whose description is the error
            (see :mod:`dd_assets.assets.load_errors`).
    """
    if execution is not None and execution not in EXECUTION_MODES:
        raise WorkflowDefinitionError(
            f"execution must be one of {', '.join(map(repr, EXECUTION_MODES))}, got {execution!r}", field="execution"
        )
    if max_concurrent_stages is not None and (
        isinstance(max_concurrent_stages, bool)
        or not isinstance(max_concurrent_stages, int)
        or max_concurrent_stages < 1
    ):
        raise WorkflowDefinitionError(
            f"max_concurrent_stages must be a positive integer, got {max_concurrent_stages!r}",
            field="max_concurrent_stages",
        )
    if isinstance(workflows, Workflow):
        workflows = [workflows]
    all_workflows = [*workflows, *more_workflows]
    names: set[str] = set()
    for workflow in all_workflows:
        if not isinstance(workflow, Workflow):
            raise WorkflowDefinitionError(f"expected Workflow objects, got {type(workflow).__name__}")
        if workflow.name in names:
            raise WorkflowDefinitionError("two workflows have this name", workflow=workflow.name, field="name")
        names.add(workflow.name)
    op_owners: dict[str, tuple[str, str]] = {}
    for workflow in all_workflows:
        for stage in workflow.stages:
            op_name = stage_op_name(workflow.name, stage.name)
            if op_name in op_owners and op_owners[op_name][0] != workflow.name:
                other_workflow, other_stage = op_owners[op_name]
                raise WorkflowDefinitionError(
                    f"becomes the Dagster op {op_name!r}, like stage {other_stage!r} of workflow "
                    f"{other_workflow!r}; rename one of them",
                    workflow=workflow.name,
                    stage=stage.name,
                    field="name",
                )
            op_owners[op_name] = (workflow.name, stage.name)
    check_model_aliases(all_workflows)
    assets: list[dg.AssetsDefinition] = []
    jobs = []
    for workflow in all_workflows:
        workflow_assets = build_workflow_assets(workflow, translator, execution, max_concurrent_stages)
        assets.extend(workflow_assets)
        job = workflow_job(workflow, workflow_assets)
        if job is not None:
            jobs.append(job)
    assets += [load_error_asset(failure) for failure in load_failures]
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        resources={
            RESOURCE_KEY: data_designer or DataDesignerResource(),
            IO_MANAGER_KEY: io_manager or StageParquetIOManager(),
        },
        executor=executor or dg.in_process_executor,
    )


def workflow_job_name(workflow: Workflow) -> str:
    """``<workflow>_job``."""
    return f"{workflow.name}_job"


def workflow_job(workflow: Workflow, assets: list[dg.AssetsDefinition]) -> dg.UnresolvedAssetJobDefinition | None:
    """A job materializing every stage of the workflow (with their checks), or ``None`` when the stages are
    partitioned in more than one way: a Dagster asset job holds one partitions definition."""
    specs = [spec for assets_def in assets for spec in assets_def.specs]
    partitions_defs = [spec.partitions_def for spec in specs if spec.partitions_def is not None]
    if any(other != partitions_defs[0] for other in partitions_defs[1:]):
        return None
    return dg.define_asset_job(
        workflow_job_name(workflow),
        # by key, not by group: a translator may put stages into other groups
        selection=dg.AssetSelection.assets(*[spec.key for spec in specs]),
        description=f"Every stage of the Data Designer workflow {workflow.name!r}.",
    )
