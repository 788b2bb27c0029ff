"""The asset factory: one Dagster asset per stage, running it with :class:`~dd_assets.stage_runner.StageRun`."""

from typing import Any

import dagster as dg

from dd_assets.spec import Stage, Workflow
from dd_assets.stage_runner import StageRun, StageRunConfig
from dd_assets.translator import IO_MANAGER_KEY, RESOURCE_KEY, DataDesignerStageTranslator


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
        name=f"{workflow.name}__{stage.name}".replace("-", "_"),
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
        )
        yield run.run({deps_by_input[name]: value for name, value in upstreams.items()})
        yield from run.check_results

    return _stage_asset


def build_workflow_assets(
    workflow: Workflow, translator: "DataDesignerStageTranslator | None" = None
) -> list[dg.AssetsDefinition]:
    """One asset per stage of a workflow, in dependency order."""
    return [build_stage_asset(workflow, stage, translator) for stage in workflow.topological_order()]
