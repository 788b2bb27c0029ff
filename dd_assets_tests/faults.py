"""Model-fault scenarios shared by the fault tests and ``benchmarks/fault_table.py``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import data_designer.config as dd

from dd_assets import DataDesignerResource, Stage, StageParquetIOManager, Workflow, build_workflow_definitions
from dd_assets_tests.llm_server import FakeLLMServer, every_kth

FAULTS = {
    "429 rate limit": (429, {"error": {"message": "rate limited", "type": "rate_limit_error"}}),
    "500 server error": (500, {"error": {"message": "internal error"}}),
    "503 unavailable": (503, {"error": {"message": "overloaded"}}),
    "timeout": "hang",
    "malformed JSON": "malformed",
}
ROWS = 16


@dataclass
class FaultOutcome:
    fault: str
    rate: float
    success: bool
    rows_kept: int
    previous_intact: bool
    message: str


def fault_workflow(completion_threshold: float = 0.5) -> Workflow:
    seed = dd.DataDesignerConfigBuilder()
    seed.add_column(
        dd.SamplerColumnConfig(
            name="n", sampler_type="uniform", params=dd.UniformSamplerParams(low=0, high=10**6), convert_to="int"
        )
    )
    write = dd.DataDesignerConfigBuilder(
        model_configs=[
            dd.ModelConfig(
                alias="fault-model",
                model="fault-model",
                provider="fault_llm",
                inference_parameters=dd.ChatCompletionInferenceParams(
                    max_parallel_requests=4, max_tokens=16, timeout=1
                ),
            )
        ]
    )
    write.add_column(dd.LLMTextColumnConfig(name="text", model_alias="fault-model", prompt="Write about {{ n }}"))
    return Workflow(
        name="faults",
        stages=[
            Stage(name="seed", config=seed, num_records=ROWS),
            Stage(name="write", config=write, depends_on=["seed"], completion_threshold=completion_threshold),
        ],
    )


def run_fault(
    server: FakeLLMServer,
    base_dir: Path,
    instance: dg.DagsterInstance,
    fault: str,
    rate: float,
    *,
    completion_threshold: float = 0.5,
    hook=None,
):
    """Materialize cleanly, then again with ``fault`` hitting ``rate`` of requests; report what was kept.

    ``hook(server, fault)`` replaces the every-k-th-request fault hook.
    """
    io_manager = StageParquetIOManager(base_dir=str(base_dir))
    resource = DataDesignerResource(
        model_providers=[{"name": "fault_llm", "endpoint": server.endpoint, "api_key": "DD_ASSETS_TEST_API_KEY"}],
        run_config={"disable_early_shutdown": True},
    )
    defs = build_workflow_definitions(
        fault_workflow(completion_threshold), data_designer=resource, io_manager=io_manager
    )
    server.reset()
    assert dg.materialize(defs.assets, resources=defs.resources, instance=instance).success
    before = io_manager.read_stage("faults", "write").to_pandas()

    server.reset()
    server.fault = (hook or (lambda srv, f: every_kth(srv, max(1, round(1 / rate)), f)))(server, FAULTS[fault])
    result = dg.materialize(
        defs.assets,
        resources=defs.resources,
        instance=instance,
        selection=[dg.AssetKey(["faults", "write"])],
        raise_on_error=False,
    )
    server.fault = None
    after = io_manager.read_stage("faults", "write").to_pandas()
    message = ""
    if not result.success:
        failure = result.failure_data_for_node("faults__write")
        message = failure.error.message if failure and failure.error else ""
    rows = len(after) if result.success else 0
    intact = result.success or after.equals(before)
    return FaultOutcome(fault, rate, result.success, rows, intact, message)
