"""build_workflow_definitions: workflows, the shared resource and the IO manager as one ``dg.Definitions``."""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from dd_assets.asset_factory import build_workflow_assets
from dd_assets.io_manager import StageParquetIOManager
from dd_assets.resource import DataDesignerResource
from dd_assets.spec import Workflow, WorkflowDefinitionError
from dd_assets.translator import IO_MANAGER_KEY, RESOURCE_KEY, DataDesignerStageTranslator
from dd_assets.validation import check_model_aliases


def build_workflow_definitions(
    workflows: Workflow | Iterable[Workflow],
    *more_workflows: Workflow,
    data_designer: DataDesignerResource | None = None,
    io_manager: StageParquetIOManager | None = None,
    translator: DataDesignerStageTranslator | None = None,
    executor: dg.ExecutorDefinition | None = None,
) -> dg.Definitions:
    """Dagster definitions for one or more workflows.

    Args:
        workflows: a ``Workflow`` or an iterable of them (more may follow positionally).
        data_designer: the shared resource (key ``"data_designer"``); Data Designer's defaults when omitted.
        io_manager: the stage IO manager (key ``"dd_stage_io_manager"``); ``base_dir="data"`` when omitted.
        translator: builds each stage's ``AssetSpec``.
        executor: defaults to the in-process executor, so one resource instance serves the whole run.
    """
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
    check_model_aliases(all_workflows)
    assets = [asset for workflow in all_workflows for asset in build_workflow_assets(workflow, translator)]
    return dg.Definitions(
        assets=assets,
        resources={
            RESOURCE_KEY: data_designer or DataDesignerResource(),
            IO_MANAGER_KEY: io_manager or StageParquetIOManager(),
        },
        executor=executor or dg.in_process_executor,
    )
