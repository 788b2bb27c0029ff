"""The asset factory: one Dagster asset per stage, running it with :class:`~dd_assets.run.stage_run.StageRun`."""

from typing import Any

import dagster as dg

from dd_assets.assets.translator import IO_MANAGER_KEY, RESOURCE_KEY, DataDesignerStageTranslator
from dd_assets.run.concurrent_runner import ConcurrentWorkflowRun, StagePlan, WorkflowRunConfig
from dd_assets.run.stage_run import StageRun
from dd_assets.run.stage_scope import StageRunConfig
from dd_assets.spec.definition_error import WorkflowDefinitionError
from dd_assets.spec.names import stage_op_name
from dd_assets.spec.workflow import Stage, Workflow


def _input_name(index: int) -> str:
    return f"upstream_{index}"


def build_stage_asset(
    workflow: Workflow, stage: Stage, translator: "DataDesignerStageTranslator | None" = None
) -> dg.AssetsDefinition:
    """The asset of one stage: its spec from the translator, upstreams loaded through their IO managers."""
    translator = translator or DataDesignerStageTranslator()
    spec = translator.get_asset_spec(workflow, stage)
    upstream_keys = {dep: translator.get_upstream_key(workflow, dep) for dep in stage.depends_on}
    ins = {_input_name(i): dg.AssetIn(key=upstream_keys[dep]) for i, dep in enumerate(stage.depends_on)}
    deps_by_input = {_input_name(i): dep for i, dep in enumerate(stage.depends_on)}

    @dg.multi_asset(
        name=stage_op_name(workflow.name, stage.name),
        specs=[spec],
        check_specs=translator.get_check_specs(workflow, stage),
        ins=ins,
        required_resource_keys={RESOURCE_KEY, IO_MANAGER_KEY},
        pool=translator.get_pool(workflow, stage),
        op_tags={"dd_assets/workflow": workflow.name, "dd_assets/stage": stage.name},
    )
    def _stage_asset(context: dg.AssetExecutionContext, config: StageRunConfig, **upstreams: Any):
        run = StageRun(
            context=context,
            workflow=workflow,
            stage=stage,
            config=config,
            code_version=spec.code_version,
            resource=getattr(context.resources, RESOURCE_KEY),
            io_manager=getattr(context.resources, IO_MANAGER_KEY),
            upstream_keys=upstream_keys,
            asset_key=spec.key,
            output_name=context.assets_def.get_output_name_for_asset_key(spec.key),
        )
        yield from run.execute({deps_by_input[name]: value for name, value in upstreams.items()})

    return _stage_asset


def build_concurrent_workflow_asset(
    workflow: Workflow,
    translator: "DataDesignerStageTranslator | None" = None,
    max_concurrent_stages: int | None = None,
) -> dg.AssetsDefinition:
    """All stages of a workflow as one subsettable multi-asset whose step runs ready stages at the same time.

    Every stage keeps its own asset key, spec, checks and materialization (the dagster-dbt pattern: one op for
    the project, every model its own asset). See :mod:`dd_assets.run.concurrent_runner`.
    """
    translator = translator or DataDesignerStageTranslator()
    stages = workflow.topological_order()
    partitioned = [stage.name for stage in stages if stage.partitions_def is not None]
    if partitioned:
        raise WorkflowDefinitionError(
            f"stages {partitioned} are partitioned: partitions run one per Dagster step, so this workflow needs "
            "execution 'per_stage'",
            workflow=workflow.name,
            field="execution",
        )
    plans: dict[str, StagePlan] = {}
    specs = []
    for stage in stages:
        spec = translator.get_asset_spec(workflow, stage)
        specs.append(spec.replace_attributes(skippable=True))  # a failed stage does not fail its siblings' outputs
        plans[stage.name] = StagePlan(
            stage=stage,
            asset_key=spec.key,
            code_version=spec.code_version,
            upstream_keys={dep: translator.get_upstream_key(workflow, dep) for dep in stage.depends_on},
        )
    external = list(dict.fromkeys(dep for stage in stages for dep in stage.depends_on if isinstance(dep, dg.AssetKey)))
    ins = {f"external_{i}": dg.AssetIn(key=key) for i, key in enumerate(external)}
    pools = {translator.get_pool(workflow, stage) for stage in stages}
    if len(pools) > 1:
        raise WorkflowDefinitionError(
            f"stages name different Dagster pools ({', '.join(sorted(map(str, pools)))}); in concurrent execution "
            "one step runs them all, so they must share one pool",
            workflow=workflow.name,
            field="execution",
        )

    @dg.multi_asset(
        name=f"{workflow.name}__stages",
        specs=specs,
        check_specs=[c for stage in stages for c in translator.get_check_specs(workflow, stage)],
        ins=ins,
        can_subset=True,
        required_resource_keys={RESOURCE_KEY, IO_MANAGER_KEY},
        pool=pools.pop(),
        op_tags={"dd_assets/workflow": workflow.name, "dd_assets/execution": "concurrent"},
    )
    def _workflow_asset(context: dg.AssetExecutionContext, config: WorkflowRunConfig, **externals: Any):
        run = ConcurrentWorkflowRun(
            context=context,
            workflow=workflow,
            plans=plans,
            resource=getattr(context.resources, RESOURCE_KEY),
            io_manager=getattr(context.resources, IO_MANAGER_KEY),
            config=config,
            max_concurrent_stages=max_concurrent_stages or workflow.max_concurrent_stages,
        )
        yield from run.execute({external[int(name.split("_")[1])]: value for name, value in externals.items()})

    return _workflow_asset


def build_workflow_assets(
    workflow: Workflow,
    translator: "DataDesignerStageTranslator | None" = None,
    execution: str | None = None,
    max_concurrent_stages: int | None = None,
) -> list[dg.AssetsDefinition]:
    """The assets of a workflow: one per stage (``per_stage``), or one multi-asset of all stages (``concurrent``).

    ``execution`` defaults to the workflow's own ``execution`` field.
    """
    if (execution or workflow.execution) == "concurrent":
        assets = [build_concurrent_workflow_asset(workflow, translator, max_concurrent_stages)]
    else:
        assets = [build_stage_asset(workflow, stage, translator) for stage in workflow.topological_order()]
    for assets_def in assets:  # the asset's own compute function carries its workflow (see workflow_of)
        setattr(assets_def.op.compute_fn.decorated_fn, WORKFLOW_ATTRIBUTE, workflow)
    return assets


WORKFLOW_ATTRIBUTE = "dd_assets_workflow"


def workflow_of(assets_def: dg.AssetsDefinition) -> Workflow | None:
    """The workflow a dd_assets asset definition was built from (``None`` for any other asset).

    Read from the definition itself, so a code location's tools see exactly its own workflows, also after
    ``map_asset_specs`` or a merge of Definitions, and nothing is kept process-wide.
    """
    try:
        function = assets_def.op.compute_fn.decorated_fn
    except (AttributeError, Exception):  # a graph-backed or source asset has no op function of ours
        return None
    workflow = getattr(function, WORKFLOW_ATTRIBUTE, None)
    return workflow if isinstance(workflow, Workflow) else None
