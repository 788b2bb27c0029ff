"""Small config builders and run helpers used across the tests."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import data_designer.config as dd

from dd_assets import DataDesignerResource, Stage, StageParquetIOManager, Workflow, build_workflow_definitions
from dd_assets.spec.names import stage_op_name
from dd_assets_tests.conftest import TEST_PROVIDER


def sampler_builder(*, seed_column: str = "n", values: list[str] | None = None) -> dd.DataDesignerConfigBuilder:
    builder = dd.DataDesignerConfigBuilder()
    builder.add_column(
        dd.SamplerColumnConfig(
            name=seed_column,
            sampler_type="uniform",
            params=dd.UniformSamplerParams(low=0, high=1000),
            convert_to="int",
        )
    )
    builder.add_column(
        dd.SamplerColumnConfig(
            name="color", sampler_type="category", params=dd.CategorySamplerParams(values=values or ["red", "blue"])
        )
    )
    return builder


def expression_builder(name: str, expr: str, dtype: str = "str") -> dd.DataDesignerConfigBuilder:
    builder = dd.DataDesignerConfigBuilder()
    builder.add_column(dd.ExpressionColumnConfig(name=name, expr=expr, dtype=dtype))
    return builder


def model_config(alias: str = "test-model", model: str = "test-model") -> dd.ModelConfig:
    return dd.ModelConfig(
        alias=alias,
        model=model,
        provider=TEST_PROVIDER,
        inference_parameters=dd.ChatCompletionInferenceParams(max_parallel_requests=2, max_tokens=32),
    )


def llm_builder(column: str, prompt: str, alias: str = "test-model", model: str = "test-model"):
    builder = dd.DataDesignerConfigBuilder(model_configs=[model_config(alias, model)])
    builder.add_column(dd.LLMTextColumnConfig(name=column, model_alias=alias, prompt=prompt))
    return builder


def seeded_llm_workflow(
    name: str,
    records: int,
    *more_stages: Stage,
    prompt: str = "Write two lines about {{ n }} and {{ color }}",
    **write_fields,
) -> Workflow:
    """``seed`` (``records`` rows of the sampler columns ``n`` and ``color``) -> ``write`` (the LLM column ``text``
    from ``prompt``, with the ``Stage`` fields ``write_fields``), then ``more_stages``."""
    return Workflow(
        name=name,
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=records),
            Stage(name="write", config=llm_builder("text", prompt), depends_on=["seed"], **write_fields),
            *more_stages,
        ],
    )


def finished_batches(work_root: Path) -> int:
    """Finished batch files in a stage's work directories (``io_manager.work_root(workflow, stage)``)."""
    return len(list(Path(work_root).glob("*/artifacts/parquet-files/batch_*.parquet")))


class FailOnce:
    """An ``on_success`` callback that fails the first time: the run stops after generating, like a killed run."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, artifact_dir: Path) -> Path:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("interrupted")
        return artifact_dir / "parquet-files"


EXECUTION = "per_stage"
"""The execution mode ``materialize`` builds definitions in; test modules that run in both modes switch it."""


def materialize(
    workflows,
    io_manager: StageParquetIOManager,
    instance: dg.DagsterInstance,
    *,
    resource: DataDesignerResource | None = None,
    selection=None,
    run_config: dict | None = None,
    extra_assets=(),
    extra_resources: dict | None = None,
    raise_on_error: bool = True,
    execution: str | None = None,
    partition_key: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize workflows on a real instance; ``run_config`` is written in the per-stage form
    (``{"ops": {"<workflow>__<stage>": {"config": ...}}}``) and translated for concurrent execution."""
    execution = execution or EXECUTION
    defs = build_workflow_definitions(workflows, data_designer=resource, io_manager=io_manager, execution=execution)
    if execution == "concurrent" and run_config:
        run_config = _concurrent_run_config(workflows, run_config)
    assets = [*defs.assets, *extra_assets]
    return dg.materialize(
        assets,
        instance=instance,
        resources={**defs.resources, **(extra_resources or {})},
        selection=selection,
        run_config=run_config,
        raise_on_error=raise_on_error,
        partition_key=partition_key,
    )


def metadata_of(result: dg.ExecuteInProcessResult, key: list[str]) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    assert events, f"no materialization of {key}"
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def _workflow_list(workflows) -> list[Workflow]:
    return [workflows] if isinstance(workflows, Workflow) else list(workflows)


def _concurrent_run_config(workflows, run_config: dict) -> dict:
    ops = dict(run_config.get("ops", {}))  # entries already in the concurrent form are kept
    for workflow in _workflow_list(workflows):
        for stage in workflow.stages:
            config = ops.pop(stage_op_name(workflow.name, stage.name), None)
            if config is not None:
                op = ops.setdefault(f"{workflow.name}__stages", {"config": {}})
                op["config"].setdefault("stages", {})[stage.name] = config["config"]
    return {**run_config, "ops": ops}


def failure_message(result: dg.ExecuteInProcessResult, workflow: str, stage: str, execution: str | None = None) -> str:
    """The failure message of a stage: its own step's, or (concurrent) that of its workflow's step."""
    node = f"{workflow}__stages" if (execution or EXECUTION) == "concurrent" else stage_op_name(workflow, stage)
    failure = result.failure_data_for_node(node)
    return failure.error.message if failure and failure.error else ""
