"""A partitioned workflow for benchmarks/bench_scale.py: a sampler root and an LLM stage, partitioned alike.

dagster asset materialize -f benchmarks/partitioned_workflow.py --select bench/root --partition 3
python benchmarks/partitioned_workflow.py loop bench/write 0 1 2 3     # one process, partition after partition

Environment: ``BENCH_PARTITIONS`` (8), ``BENCH_ROWS`` (rows per partition, 40), ``BENCH_ENDPOINT`` (the
OpenAI-compatible server), ``BENCH_PARALLEL`` (4, the alias's ``max_parallel_requests``), ``DD_ASSETS_BASE_DIR``
(a path or ``s3://``), ``BENCH_S3_ENDPOINT`` (an S3-compatible server, credentials in ``BENCH_S3_KEY`` /
``BENCH_S3_SECRET`` by name) and ``BENCH_DASK_ADDRESS`` (run steps on that Dask cluster with dagster-dask).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("NEMO_TELEMETRY_ENABLED", "false")

import dagster as dg  # noqa: E402
import data_designer.config as dd  # noqa: E402

from dd_assets import DataDesignerResource, Stage, StageParquetIOManager, Workflow, build_workflow_definitions  # noqa: E402

PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "8"))
ROWS = int(os.environ.get("BENCH_ROWS", "40"))
PARALLEL = int(os.environ.get("BENCH_PARALLEL", "4"))

root = dd.DataDesignerConfigBuilder()
root.add_column(
    dd.SamplerColumnConfig(
        name="n", sampler_type="uniform", params=dd.UniformSamplerParams(low=0, high=10**6), convert_to="int"
    )
)
root.add_column(dd.SamplerColumnConfig(name="id", sampler_type="uuid", params=dd.UUIDSamplerParams()))
write = dd.DataDesignerConfigBuilder(
    model_configs=[
        dd.ModelConfig(
            alias="bench-model",
            model="bench-model",
            provider="bench_llm",
            inference_parameters=dd.ChatCompletionInferenceParams(max_parallel_requests=PARALLEL, max_tokens=16),
        )
    ]
)
write.add_column(dd.LLMTextColumnConfig(name="text", model_alias="bench-model", prompt="Write about {{ n }}"))

workflow = Workflow(
    name="bench",
    stages=[
        Stage(name="root", config=root, num_records=ROWS * PARTITIONS, partitions=PARTITIONS),
        Stage(name="write", config=write, depends_on=["root"], partitions=PARTITIONS),
    ],
)


def _storage() -> dict:
    endpoint = os.environ.get("BENCH_S3_ENDPOINT")
    if not endpoint:
        return {}
    return {
        "storage_options": {"endpoint_url": endpoint, "client_kwargs": {"region_name": "us-east-1"}},
        "storage_secrets": {"key": "BENCH_S3_KEY", "secret": "BENCH_S3_SECRET"},
    }


def _executor():
    address = os.environ.get("BENCH_DASK_ADDRESS")
    if not address:
        return None
    from dd_assets.run.dask_executor import dask_executor

    return dask_executor.configured({"cluster": {"existing": {"address": address}}})


defs = build_workflow_definitions(
    workflow,
    data_designer=DataDesignerResource(
        model_providers=[
            {
                "name": "bench_llm",
                "endpoint": os.environ.get("BENCH_ENDPOINT", "http://127.0.0.1:8000/v1"),
                "api_key": "BENCH_KEY",
            }
        ],
        run_config={"buffer_size": 10},
    ),
    io_manager=StageParquetIOManager(base_dir=os.environ.get("DD_ASSETS_BASE_DIR", "data"), **_storage()),
    executor=_executor(),
)


def loop(selection: str, keys: list[str]) -> None:
    """Materialize ``selection`` for each partition key in turn, in this one process, on the DAGSTER_HOME instance."""
    with dg.DagsterInstance.get() as instance:
        for key in keys:
            result = dg.materialize(
                [*defs.assets],
                instance=instance,
                resources=defs.resources,
                selection=[selection],
                partition_key=key,
            )
            if not result.success:
                sys.exit(f"partition {key} failed")


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "loop":
    loop(sys.argv[2], sys.argv[3:])
