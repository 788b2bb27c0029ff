"""A root stage and three LLM branches, as dd_assets definitions and as a CompositeWorkflow run in sequence.

dagster asset materialize -f benchmarks/branch_workflow.py --select '*'   # dd_assets
python benchmarks/branch_workflow.py composite <artifact_dir>            # CompositeWorkflow: root, b0, b1, b2

Environment: ``BENCH_ENDPOINT`` (the OpenAI-compatible server), ``BENCH_ROWS`` (200), ``BENCH_ALIASES``
(``three``: one alias per branch, or ``one``: every branch on one alias), ``BENCH_PARALLEL`` (4, each alias's
``max_parallel_requests``), ``BENCH_EXECUTION`` (``per_stage`` or ``concurrent``) and ``BENCH_EXECUTOR``
(``in_process`` or ``multiprocess``).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("NEMO_TELEMETRY_ENABLED", "false")

import data_designer.config as dd  # noqa: E402

ROWS = int(os.environ.get("BENCH_ROWS", "200"))
PARALLEL = int(os.environ.get("BENCH_PARALLEL", "4"))
ALIASES = ["m-a", "m-b", "m-c"] if os.environ.get("BENCH_ALIASES", "three") == "three" else ["m-one"] * 3
PROVIDER = {"name": "bench_llm", "endpoint": os.environ.get("BENCH_ENDPOINT", "http://127.0.0.1:8000/v1")}


def _model(alias: str) -> dd.ModelConfig:
    return dd.ModelConfig(
        alias=alias,
        model=alias,
        provider=PROVIDER["name"],
        inference_parameters=dd.ChatCompletionInferenceParams(max_parallel_requests=PARALLEL, max_tokens=16),
    )


def stage_builders() -> list[tuple[str, dd.DataDesignerConfigBuilder, int | None]]:
    root = dd.DataDesignerConfigBuilder()
    root.add_column(
        dd.SamplerColumnConfig(
            name="n", sampler_type="uniform", params=dd.UniformSamplerParams(low=0, high=10**6), convert_to="int"
        )
    )
    stages = [("root", root, ROWS)]
    for index, alias in enumerate(ALIASES):
        branch = dd.DataDesignerConfigBuilder(model_configs=[_model(alias)])
        branch.add_column(
            dd.LLMTextColumnConfig(name=f"text{index}", model_alias=alias, prompt=f"branch {index} about {{{{ n }}}}")
        )
        stages.append((f"b{index}", branch, None))
    return stages


def run_composite(artifact_dir: str) -> None:
    from data_designer.config.models import ModelProvider
    from data_designer.config.run_config import RunConfig
    from data_designer.interface import DataDesigner

    data_designer = DataDesigner(artifact_path=artifact_dir, model_providers=[ModelProvider(**PROVIDER)])
    data_designer.set_run_config(RunConfig(otel_metrics_port=None))
    workflow = data_designer.compose_workflow(name="branches")
    for name, builder, num_records in stage_builders():
        workflow.add_stage(name, builder, num_records=num_records)  # linear: each branch reads the one before
    print("rows", workflow.run().count_records())


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "composite":
    run_composite(sys.argv[2])
else:
    import dagster as dg

    from dd_assets import DataDesignerResource, Stage, StageParquetIOManager, Workflow, build_workflow_definitions

    workflow = Workflow(
        name="branches",
        stages=[
            Stage(name=name, config=builder, num_records=num_records, depends_on=[] if name == "root" else ["root"])
            for name, builder, num_records in stage_builders()
        ],
    )
    executor = dg.multiprocess_executor if os.environ.get("BENCH_EXECUTOR") == "multiprocess" else None
    defs = build_workflow_definitions(
        workflow,
        data_designer=DataDesignerResource(model_providers=[PROVIDER]),
        io_manager=StageParquetIOManager(base_dir=os.environ.get("DD_ASSETS_BASE_DIR", "data")),
        execution=os.environ.get("BENCH_EXECUTION", "per_stage"),
        executor=executor,
    )
