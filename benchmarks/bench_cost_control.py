"""Stall deadline and token budgets, measured in one run: the figures of docs/benchmarks.md's cost-control part.

    python benchmarks/bench_cost_control.py [--records 60] [--batch 10] [--latency 0.05]

Against the local test server (``dd_assets_tests/llm_server.py``), one LLM stage of ``--records`` records in
batches of ``--batch``, generated one batch after another:

1. Stall: the provider answers 429 for good after two batches. For each ``stall_timeout_s``: the time from the
   first 429 to the stage's failure, as a ratio to ``stall_timeout_s`` plus one batch's time (the target is <= 1),
   the finished batches kept, and the requests the rerun (provider healthy) sends against the records of the
   unfinished batches.
2. Budget: ``token_budget`` of about 40% of the stage's tokens. Tokens used against the budget (the overshoot is the
   requests already in flight), the requests the rerun with a larger budget sends, and how many records were
   requested twice over both runs (the answered records of batches that were still in progress at the stop).
3. The guard's own cost per request attempt (its bookkeeping around each request, without the network).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ["NEMO_TELEMETRY_ENABLED"] = "false"  # Data Designer reads these at import
os.environ.setdefault("DATA_DESIGNER_HOME", tempfile.mkdtemp(prefix="dd_home_"))

import dagster as dg  # noqa: E402

from dd_assets import DataDesignerResource, StageParquetIOManager, Workflow  # noqa: E402
from dd_assets.engine.guard_hooks import ModelCall  # noqa: E402
from dd_assets.engine.stage_guard import StageGuard  # noqa: E402
from dd_assets_tests.conftest import TEST_API_KEY_ENV, TEST_PROVIDER  # noqa: E402
from dd_assets_tests.helpers import failure_message, finished_batches, materialize, seeded_llm_workflow  # noqa: E402
from dd_assets_tests.llm_server import HEALTH_CHECK_PROMPT, FakeLLMServer, after_n_answers  # noqa: E402

RATE_LIMITED = (429, {"error": {"message": "rate limit exceeded"}})


def _resource(server: FakeLLMServer, batch: int) -> DataDesignerResource:
    provider = {
        "name": TEST_PROVIDER,
        "endpoint": server.endpoint,
        "provider_type": "openai",
        "api_key": TEST_API_KEY_ENV,
    }
    return DataDesignerResource(
        model_providers=[provider],
        run_config={"buffer_size": batch, "max_concurrent_row_groups": 1},
        progress_every_s=0,
    )


def _write_prompts(server: FakeLLMServer) -> list[str]:
    return [p for p in server.prompts if p != HEALTH_CHECK_PROMPT and p.startswith("Write")]


@dataclass
class _WriteStage:
    """The benchmark's ``write`` stage, its seed materialized, on a fresh instance and storage."""

    server: FakeLLMServer
    latency: float
    workflow: Workflow
    io_manager: StageParquetIOManager
    instance: dg.DagsterInstance
    resource: DataDesignerResource

    def materialize(self, fault=None, **kwargs) -> dg.ExecuteInProcessResult:
        """Materialize the stage, the server reset first (counters cleared, answering in ``latency``, ``fault``)."""
        self.server.reset()
        self.server.delay_s, self.server.fault = self.latency, fault
        return materialize(
            self.workflow, self.io_manager, self.instance, resource=self.resource, selection=["bench/write"], **kwargs
        )

    def finished_batches(self) -> int:
        return finished_batches(self.io_manager.work_root("bench", "write"))


@contextlib.contextmanager
def _write_stage(
    server: FakeLLMServer, records: int, batch: int, latency: float, **write_fields
) -> Iterator[_WriteStage]:
    with tempfile.TemporaryDirectory() as tmp, dg.DagsterInstance.ephemeral() as instance:
        io_manager = StageParquetIOManager(base_dir=str(Path(tmp) / "data"))
        resource = _resource(server, batch)
        workflow = seeded_llm_workflow("bench", records, **write_fields)
        materialize(workflow, io_manager, instance, resource=resource, selection=["bench/seed"])
        yield _WriteStage(server, latency, workflow, io_manager, instance, resource)


def stall(server: FakeLLMServer, records: int, batch: int, latency: float, timeout_s: float) -> dict[str, float]:
    with _write_stage(server, records, batch, latency, stall_timeout_s=timeout_s) as stage:
        hook = after_n_answers(server, 2 * batch, RATE_LIMITED)
        result = stage.materialize(fault=hook, raise_on_error=False)
        failed_at = time.monotonic()
        assert not result.success and "stalled" in failure_message(result, "bench", "write"), "the stage did not stall"
        answered = sorted(server.spans)[: 2 * batch]
        one_batch = (answered[-1][1] - answered[0][0]) / 2
        waited = failed_at - hook.first_fault_at
        kept = stage.finished_batches()
        rerun = stage.materialize()  # the provider recovers
        assert rerun.success
        return {
            "waited": waited,
            "one_batch": one_batch,
            "ratio": waited / (timeout_s + one_batch),
            "kept": kept,
            "rerun_requests": len(_write_prompts(server)),
            "unfinished_records": records - kept * batch,
        }


def budget(server: FakeLLMServer, records: int, batch: int, latency: float) -> dict[str, float]:
    tokens_per_request = 7 + 2  # the server counts prompt words as input tokens and answers with two tokens
    limit = int(0.4 * records * tokens_per_request)
    with _write_stage(server, records, batch, latency, token_budget=limit) as stage:
        result = stage.materialize(raise_on_error=False)
        assert not result.success and "token budget spent" in failure_message(result, "bench", "write")
        first = _write_prompts(server)
        kept = stage.finished_batches()
        larger = {"ops": {"bench__write": {"config": {"token_budget": 100 * records * tokens_per_request}}}}
        rerun = stage.materialize(run_config=larger)
        assert rerun.success
        second = _write_prompts(server)
        return {
            "budget": limit,
            "used": len(first) * tokens_per_request,
            "kept": kept,
            "rerun_requests": len(second),
            "unfinished_records": records - kept * batch,
            # the rerun requests every record of an unfinished batch: those answered in the first run go twice
            "requested_twice": len(first) - kept * batch,
            "first_requests": len(first),
        }


def guard_cost(n: int = 200_000) -> float:
    guard = StageGuard(stall_timeout_s=300, token_budget=10**12)
    call = ModelCall(alias="a", model="m", provider="p")
    start = time.perf_counter()
    for _ in range(n):
        guard.before_attempt(call)
        guard.after_attempt(call, None)
        guard.add_tokens(9)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server takes per answer")
    args = parser.parse_args()
    server = FakeLLMServer().start()
    try:
        latency_ms = args.latency * 1000
        print(f"LLM stage: {args.records} records in batches of {args.batch}, {latency_ms:.0f} ms per answer\n")
        print("1. Stall: the provider answers 429 for good after two batches")
        print("stall_timeout_s | first 429 -> failure | one batch | ratio to deadline + batch | kept | rerun requests")
        for timeout_s in (2.0, 5.0, 10.0):
            server.reset()
            figures = stall(server, args.records, args.batch, args.latency, timeout_s)
            print(
                f"{timeout_s:>15g} | {figures['waited']:>18.2f} s | {figures['one_batch']:>7.2f} s | "
                f"{figures['ratio']:>24.3f} | {figures['kept']:>4} | {figures['rerun_requests']} "
                f"(records of unfinished batches: {figures['unfinished_records']})"
            )
        print("\n2. Token budget of 40% of the stage's tokens, then a rerun with a larger one")
        server.reset()
        figures = budget(server, args.records, args.batch, args.latency)
        ratio = figures["used"] / figures["budget"]
        print(
            f"tokens used {figures['used']} of budget {figures['budget']} (ratio {ratio:.3f}); "
            f"{figures['first_requests']} requests; {figures['kept']} batch(es) kept"
        )
        print(
            f"rerun requests {figures['rerun_requests']} "
            f"(records of unfinished batches: {figures['unfinished_records']}); "
            f"records requested in both runs: {figures['requested_twice']}"
        )
        print(f"\n3. The guard's bookkeeping per request attempt: {guard_cost() * 1e6:.2f} us")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
