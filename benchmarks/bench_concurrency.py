"""Concurrent execution, measured side by side in one run: every figure of docs/benchmarks.md's concurrency part.

    python benchmarks/bench_concurrency.py [--repeats 3] [--rows 200] [--linear-records 20000]

1. Branch concurrency: a root and three LLM branches on three aliases (``benchmarks/branch_workflow.py``) against
   the local test server answering in 200 ms, as whole processes: concurrent mode, per-stage mode on the
   in-process and on the multiprocess executor, and ``CompositeWorkflow.run()`` of the same stages in sequence.
2. Shared admission: the three branches on one alias with ``max_parallel_requests=4`` in concurrent mode: the
   server's peak of requests in flight, and whether the branches' requests overlapped in time.
3. Orchestration overhead: the 20,000-row, 3-stage linear workflow (``benchmarks/linear_workflow.py``) in both
   modes against ``CompositeWorkflow.run()``, and where a process's fixed cost goes.
4. Definitions load: a generated 200-stage workflow, dd_assets' own share of the load time per stage.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.processes import BIN, offline_env, run_workflow, timed  # noqa: E402

BRANCHES = HERE / "branch_workflow.py"
LINEAR = HERE / "linear_workflow.py"


def _compare(label: str, kinds: list[str], workflow_file: Path, env: dict[str, str], repeats: int) -> dict:
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for kind in kinds:  # untimed warm-up of each side
        print(f"  warm-up  {kind:28s} {run_workflow(kind, workflow_file, env):7.2f} s", flush=True)
    for index in range(repeats):
        order = kinds if index % 2 == 0 else list(reversed(kinds))
        for kind in order:
            elapsed = run_workflow(kind, workflow_file, env)
            times[kind].append(elapsed)
            print(f"  run {index + 1}    {kind:28s} {elapsed:7.2f} s", flush=True)
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    print(f"\n  {label}: median wall time of {repeats} run(s), whole processes")
    for kind in kinds:
        ratio = medians[kind] / medians["composite"]
        print(f"    {kind:28s} {medians[kind]:7.2f} s   ratio to CompositeWorkflow {ratio:.3f}")
    return medians


def branch_concurrency(server, homes: Path, rows: int, repeats: int) -> None:
    print(
        f"\n1. Branch concurrency: root + 3 LLM branches on 3 aliases, {rows} rows, 200 ms per request, "
        "max_parallel_requests=4",
        flush=True,
    )
    env = {**offline_env(homes), "BENCH_ENDPOINT": server.endpoint, "BENCH_ROWS": str(rows), "BENCH_ALIASES": "three"}
    kinds = ["composite", "concurrent", "per_stage:in_process", "per_stage:multiprocess"]
    medians = _compare("branch concurrency", kinds, BRANCHES, env, repeats)
    print(f"  concurrent / CompositeWorkflow = {medians['concurrent'] / medians['composite']:.3f} (target <= 0.45)")
    for kind in kinds[2:]:
        print(f"  concurrent / {kind} = {medians['concurrent'] / medians[kind]:.3f}")


def shared_admission(server, homes: Path, rows: int) -> None:
    print("\n2. Shared admission: 3 branches on ONE alias, max_parallel_requests=4, concurrent mode", flush=True)
    env = {**offline_env(homes), "BENCH_ENDPOINT": server.endpoint, "BENCH_ROWS": str(rows), "BENCH_ALIASES": "one"}
    server.reset()
    server.delay_s = 0.2
    elapsed = run_workflow("concurrent", BRANCHES, env)
    spans = [server.spans_matching(f"branch {i} about") for i in range(3)]
    windows = [(min(s for s, _ in span), max(e for _, e in span)) for span in spans]
    overlaps = sum(
        1
        for i in range(3)
        for j in range(i + 1, 3)
        if max(windows[i][0], windows[j][0]) < min(windows[i][1], windows[j][1])
    )
    print(f"  wall time {elapsed:.2f} s; requests per branch {[len(s) for s in spans]}")
    print(f"  peak requests in flight at the server: {server.peak_in_flight} (limit 4)")
    print(f"  branch pairs whose requests overlapped in time: {overlaps} of 3")


def _fixed_costs(env: dict[str, str]) -> None:
    probes = {
        "start Python": "pass",
        "import Data Designer's engine (both sides)": "from data_designer.interface import DataDesigner",
        "+ import dagster": "from data_designer.interface import DataDesigner; import dagster",
        "+ import dagster's CLI": "from data_designer.interface import DataDesigner; import dagster._cli",
        "+ import dd_assets": "import dagster._cli; import dd_assets",
        "+ build the linear workflow's definitions": (
            f"import dagster._cli; import runpy; runpy.run_path({str(LINEAR)!r})"
        ),
    }
    print("  imports, cumulative (best of 3 cold starts each):")
    for label, code in probes.items():
        best = min(timed([sys.executable, "-c", code], env, str(HERE)) for _ in range(3))
        print(f"    {label:45s} {best:6.2f} s")


def _phases(env: dict[str, str]) -> None:
    """Where a 10-row dd_assets process spends its time, from the event log's timestamps."""
    import dagster as dg

    with tempfile.TemporaryDirectory() as tmp:
        env = {**env, "DD_ASSETS_BASE_DIR": str(Path(tmp) / "data"), "BENCH_NUM_RECORDS": "10"}
        start = time.time()
        timed([str(BIN / "dagster"), "asset", "materialize", "-f", str(LINEAR), "--select", "*"], env, tmp)
        end = time.time()
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        run = instance.get_runs(limit=1)[0]
        events = [e for e in instance.all_logs(run.run_id) if e.dagster_event is not None]
    kinds = [(e.timestamp, e.dagster_event.event_type_value) for e in events]
    first_step = next(t for t, k in kinds if k == "STEP_START")
    last_step = max(t for t, k in kinds if k == "STEP_SUCCESS")
    print("  a 10-row run of dd_assets, from its event log:")
    print(f"    start to the run's first event (imports, definitions, instance) {kinds[0][0] - start:6.2f} s")
    print(f"    run setup until the first stage starts                          {first_step - kinds[0][0]:6.2f} s")
    print(f"    the three stages (Data Designer and dd_assets)                  {last_step - first_step:6.2f} s")
    print(f"    run teardown, and the process's exit                            {end - last_step:6.2f} s")


def orchestration_overhead(homes: Path, records: int, repeats: int) -> None:
    print(f"\n3. Orchestration overhead: the linear 3-stage workflow, {records} rows, no LLM", flush=True)
    env = {**offline_env(homes), "BENCH_NUM_RECORDS": str(records)}
    medians = _compare("linear workflow", ["composite", "per_stage", "concurrent"], LINEAR, env, repeats)
    print(
        f"  per_stage / CompositeWorkflow = {medians['per_stage'] / medians['composite']:.3f}, "
        f"concurrent / CompositeWorkflow = {medians['concurrent'] / medians['composite']:.3f} (target <= 1.05)"
    )
    small = {**env, "BENCH_NUM_RECORDS": "10"}
    fixed = {
        kind: statistics.median([run_workflow(kind, LINEAR, small) for _ in range(3)])
        for kind in ("composite", "per_stage")
    }
    print(
        f"  at 10 rows (fixed cost per process): dd_assets {fixed['per_stage']:.2f} s, "
        f"CompositeWorkflow {fixed['composite']:.2f} s"
    )
    _fixed_costs(env)
    _phases(env)


def definitions_load(num_stages: int = 200) -> None:
    print(f"\n4. Definitions load: a generated {num_stages}-stage workflow", flush=True)
    import data_designer.config as dd

    from dd_assets import Stage, Workflow, build_workflow_definitions
    from dd_assets.spec.stage_config import load_stage_config

    def config(index: int) -> dict:
        column = {"name": f"c{index}", "column_type": "expression", "expr": "{{ n }}-" + str(index)}
        if index == 0:
            column = {"name": "n", "column_type": "sampler", "sampler_type": "uniform", "params": {"low": 0, "high": 9}}
        return {"columns": [column]}

    configs = [config(i) for i in range(num_stages)]
    start = time.perf_counter()
    for item in configs:  # what Data Designer itself spends building the config objects
        load_stage_config(item).build()
        dd.DataDesignerConfigBuilder.from_config(dict(item)).build()
    data_designer_s = (time.perf_counter() - start) / 2
    start = time.perf_counter()
    workflow = Workflow(
        name="generated",
        stages=[
            Stage(name=f"s{i}", config=item, depends_on=[f"s{i // 2}"] if i else [], num_records=10 if i == 0 else None)
            for i, item in enumerate(configs)
        ],
    )
    build_workflow_definitions(workflow)
    total_s = time.perf_counter() - start
    ours = (total_s - data_designer_s) / num_stages * 1000
    print(
        f"  total {total_s:.2f} s; Data Designer building configs {data_designer_s:.2f} s; "
        f"dd_assets' own share {ours:.2f} ms per stage"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--linear-records", type=int, default=20000)
    parser.add_argument("--only", choices=["branches", "admission", "overhead", "load"], default=None)
    args = parser.parse_args()
    os.environ.setdefault("NEMO_TELEMETRY_ENABLED", "false")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")

    from dd_assets_tests.llm_server import FakeLLMServer

    server = FakeLLMServer().start()
    server.delay_s = 0.2
    try:
        with tempfile.TemporaryDirectory() as homes:
            if args.only in (None, "branches"):
                branch_concurrency(server, Path(homes), args.rows, args.repeats)
            if args.only in (None, "admission"):
                shared_admission(server, Path(homes), args.rows)
            if args.only in (None, "overhead"):
                orchestration_overhead(Path(homes), args.linear_records, args.repeats)
            if args.only in (None, "load"):
                definitions_load()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
