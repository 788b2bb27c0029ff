"""dd_assets' overhead over Data Designer's CompositeWorkflow, split into a fixed cost and a per-row cost.

Runs the 3-stage linear workflow (``benchmarks/linear_workflow.py``) as whole processes at two sizes, in pairs:
``dagster asset materialize`` (per-stage mode, in-process executor) against ``CompositeWorkflow.run()``, the order
alternating from pair to pair and the sizes interleaved, after one untimed warm-up of each side. From the medians it
derives a straight line ``seconds = fixed + rows * per_row`` for each side and prints

- the per-row ratio: dd_assets' slope over CompositeWorkflow's between the two sizes (goal <= 1.02);
- the fixed cost: dd_assets' intercept minus CompositeWorkflow's (goal <= 1.0 s), and the plain difference at the
  smaller size;
- Dagster's own part of that fixed cost: three assets that do nothing (``benchmarks/dagster_floor.py``) through the
  same ``dagster asset materialize`` command, minus the same file run by plain Python; what is left of the fixed
  cost is dd_assets' own;

and the same figures per pair (each pair times all four runs), for their spread; then all of it again for the
processes' CPU time (user + system), which a machine loaded by other work disturbs less than wall time.

    python benchmarks/bench_overhead.py                    # --pairs 5 --sizes 2000 20000: ~7 min on 2 quiet cores
    python benchmarks/bench_overhead.py --pairs 2          # a quick look
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.processes import BIN, offline_env, run_workflow, timed  # noqa: E402

WORKFLOW = HERE / "linear_workflow.py"
FLOOR = HERE / "dagster_floor.py"
SIDES = {"dd_assets": "per_stage", "composite": "composite"}
PER_ROW_GOAL = 1.02
FIXED_GOAL_S = 1.0


def derived(times: dict[tuple[str, int], float], small: int, large: int) -> dict[str, float]:
    """Per-row ratio, fixed cost (intercept difference) and the gap at ``small`` rows, from one time per side/size."""
    slopes = {side: (times[side, large] - times[side, small]) / (large - small) for side in SIDES}
    intercepts = {side: times[side, small] - slopes[side] * small for side in SIDES}
    return {
        "per_row_ratio": slopes["dd_assets"] / slopes["composite"],
        "fixed_s": intercepts["dd_assets"] - intercepts["composite"],
        "gap_small_s": times["dd_assets", small] - times["composite", small],
        "per_row_ms_dd_assets": slopes["dd_assets"] * 1000,
        "per_row_ms_composite": slopes["composite"] * 1000,
    }


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def spread(values: list[float], unit: str = " s", digits: int = 2) -> str:
    low, mid, high = (f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))
    return f"median {mid}{unit} (min {low}, max {high})"


def floor_run(side: str, env: dict[str, str]) -> float:
    """Wall seconds of the floor file through Dagster's CLI (``dagster_floor``) or plain Python (``python``)."""
    if side == "python":
        return timed([sys.executable, str(FLOOR)], env, tempfile.gettempdir())
    with tempfile.TemporaryDirectory() as tmp:
        return timed([str(BIN / "dagster"), "asset", "materialize", "-f", str(FLOOR), "--select", "*"], env, tmp)


def summarize(
    runs: dict[tuple[str, int], list[float]], floors: dict[str, list[float]], small: int, large: int, what: str
) -> None:
    """Medians and spread of each side at each size, then the per-row ratio and fixed cost against their goals."""
    pairs = len(runs["dd_assets", small])
    print(f"\n{what}, {pairs} run(s) of each side at each size")
    for size in (small, large):
        for side in SIDES:
            print(f"  {size:6d} rows  {side:10s} {spread(runs[side, size])}")
        ratios = [a / b for a, b in zip(runs["dd_assets", size], runs["composite", size], strict=True)]
        print(f"  {size:6d} rows  ratio      {spread(ratios, unit='', digits=3)}")
    medians = derived({key: statistics.median(values) for key, values in runs.items()}, small, large)
    per_pair = [derived({key: values[index] for key, values in runs.items()}, small, large) for index in range(pairs)]
    print(
        f"  per row: dd_assets {medians['per_row_ms_dd_assets']:.4f} ms, "
        f"CompositeWorkflow {medians['per_row_ms_composite']:.4f} ms (slopes between {small} and {large} rows)"
    )
    per_row_ok, fixed_ok = medians["per_row_ratio"] <= PER_ROW_GOAL, medians["fixed_s"] <= FIXED_GOAL_S
    print(
        f"  per-row ratio (of the medians): {medians['per_row_ratio']:.3f}   goal <= {PER_ROW_GOAL}: "
        f"{'met' if per_row_ok else 'NOT met'}; per pair {spread([p['per_row_ratio'] for p in per_pair], '', 3)}"
    )
    print(
        f"  fixed cost (intercept difference): {medians['fixed_s']:.2f} s   goal <= {FIXED_GOAL_S} s: "
        f"{'met' if fixed_ok else 'NOT met'}; per pair {spread([p['fixed_s'] for p in per_pair])}"
    )
    print(
        f"  difference at {small} rows: {medians['gap_small_s']:.2f} s; "
        f"per pair {spread([p['gap_small_s'] for p in per_pair])}"
    )
    dagster_own = [a - b for a, b in zip(floors["dagster_floor"], floors["python"], strict=True)]
    ours = [p["fixed_s"] - d for p, d in zip(per_pair, dagster_own, strict=True)]
    print(
        f"  of the fixed cost, Dagster's own (3 empty assets through the same command, minus plain Python): "
        f"{spread(dagster_own)}; what is left, dd_assets' own: {spread(ours)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="timed runs of each side at each size (default 5)")
    parser.add_argument("--sizes", type=int, nargs=2, default=[2000, 20000], metavar=("SMALL", "LARGE"))
    args = parser.parse_args()
    small, large = sorted(args.sizes)

    wall: dict[tuple[str, int], list[float]] = {(side, size): [] for side in SIDES for size in (small, large)}
    cpu: dict[tuple[str, int], list[float]] = {key: [] for key in wall}
    floor_wall: dict[str, list[float]] = {"dagster_floor": [], "python": []}
    floor_cpu: dict[str, list[float]] = {"dagster_floor": [], "python": []}
    with tempfile.TemporaryDirectory() as homes:
        base_env = offline_env(Path(homes))
        envs = {size: {**base_env, "BENCH_NUM_RECORDS": str(size)} for size in (small, large)}
        schedule = [("warm-up", side, small) for side in SIDES]
        for index in range(args.pairs):
            sides = list(SIDES) if index % 2 == 0 else list(reversed(SIDES))
            sizes = (small, large) if index % 2 == 0 else (large, small)
            schedule += [(f"pair {index + 1}", side, size) for size in sizes for side in sides]
            schedule += [(f"pair {index + 1}", side, 0) for side in floor_wall]
        for label, side, size in schedule:
            cpu_before = children_cpu_s()
            elapsed = run_workflow(SIDES[side], WORKFLOW, envs[size]) if size else floor_run(side, base_env)
            cpu_s = children_cpu_s() - cpu_before
            if label != "warm-up" and not size:
                floor_wall[side].append(elapsed)
                floor_cpu[side].append(cpu_s)
            elif label != "warm-up":
                wall[side, size].append(elapsed)
                cpu[side, size].append(cpu_s)
            print(f"{label:8s} {side:10s} {size or '-':>6} rows {elapsed:7.2f} s wall {cpu_s:7.2f} s CPU", flush=True)

    print(
        f"\nmachine: {os.cpu_count()} cores, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end"
    )
    summarize(wall, floor_wall, small, large, "wall time (the goals)")
    summarize(cpu, floor_cpu, small, large, "CPU time, user + system (less sensitive to a loaded machine)")


if __name__ == "__main__":
    main()
