"""Small config builders and run helpers used across the tests."""

from __future__ import annotations

import dagster as dg
import data_designer.config as dd

from dd_assets import DataDesignerResource, StageParquetIOManager, build_workflow_definitions
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
) -> dg.ExecuteInProcessResult:
    defs = build_workflow_definitions(workflows, data_designer=resource, io_manager=io_manager)
    assets = [*defs.assets, *extra_assets]
    return dg.materialize(
        assets,
        instance=instance,
        resources={**defs.resources, **(extra_resources or {})},
        selection=selection,
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def metadata_of(result: dg.ExecuteInProcessResult, key: list[str]) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(key)]
    assert events, f"no materialization of {key}"
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}
