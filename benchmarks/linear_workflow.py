"""A 3-stage linear, non-LLM workflow of 20,000 rows, as dd_assets definitions and as a CompositeWorkflow.

dagster asset materialize -f benchmarks/linear_workflow.py --select '*'   # dd_assets
python benchmarks/linear_workflow.py composite <artifact_dir>            # Data Designer's CompositeWorkflow
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("NEMO_TELEMETRY_ENABLED", "false")

import data_designer.config as dd  # noqa: E402

NUM_RECORDS = int(os.environ.get("BENCH_NUM_RECORDS", "20000"))


def stage_builders() -> list[tuple[str, dd.DataDesignerConfigBuilder, int | None]]:
    people = dd.DataDesignerConfigBuilder()
    people.add_column(dd.SamplerColumnConfig(name="user_id", sampler_type="uuid", params=dd.UUIDSamplerParams()))
    people.add_column(
        dd.SamplerColumnConfig(
            name="country", sampler_type="category", params=dd.CategorySamplerParams(values=["de", "fr", "us", "jp"])
        )
    )
    people.add_column(
        dd.SamplerColumnConfig(
            name="age", sampler_type="uniform", params=dd.UniformSamplerParams(low=18, high=90), convert_to="int"
        )
    )
    enriched = dd.DataDesignerConfigBuilder()
    enriched.add_column(dd.ExpressionColumnConfig(name="cohort", expr="{{ country }}-{{ (age // 10) * 10 }}"))
    enriched.add_column(dd.ExpressionColumnConfig(name="is_senior", expr="{{ age >= 65 }}", dtype="bool"))
    export = dd.DataDesignerConfigBuilder()
    export.add_column(dd.ExpressionColumnConfig(name="line", expr="{{ user_id }},{{ cohort }},{{ is_senior }}"))
    export.add_processor(dd.DropColumnsProcessorConfig(name="drop_age", column_names=["age"]))
    return [("people", people, NUM_RECORDS), ("enriched", enriched, None), ("export", export, None)]


def run_composite(artifact_dir: str) -> None:
    from data_designer.config.run_config import RunConfig
    from data_designer.interface import DataDesigner

    data_designer = DataDesigner(artifact_path=artifact_dir)
    data_designer.set_run_config(RunConfig(otel_metrics_port=None))
    workflow = data_designer.compose_workflow(name="bench")
    for name, builder, num_records in stage_builders():
        workflow.add_stage(name, builder, num_records=num_records)
    results = workflow.run()
    print("rows", results.count_records())


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "composite":
    run_composite(sys.argv[2])
else:
    from dd_assets import Stage, StageParquetIOManager, Workflow, build_workflow_definitions

    stages, previous = [], None
    for name, builder, num_records in stage_builders():
        stages.append(
            Stage(name=name, config=builder, num_records=num_records, depends_on=[previous] if previous else [])
        )
        previous = name
    defs = build_workflow_definitions(
        Workflow(name="bench", stages=stages),
        io_manager=StageParquetIOManager(base_dir=os.environ.get("DD_ASSETS_BASE_DIR", "data")),
        execution=os.environ.get("BENCH_EXECUTION", "per_stage"),
    )
