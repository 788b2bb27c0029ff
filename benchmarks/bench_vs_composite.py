"""dd_assets vs Data Designer's CompositeWorkflow on the same 3-stage linear workflow, as whole processes.

Runs ``dagster asset materialize`` and ``CompositeWorkflow.run()`` alternately, ``--repeats`` times each, and
prints the median wall times and their ratio (dd_assets / CompositeWorkflow). Outputs go to fresh directories
each run; ``DAGSTER_HOME`` and ``DATA_DESIGNER_HOME`` persist across runs as they do on a user's machine (one
untimed warm-up run of each side creates them).

    python benchmarks/bench_vs_composite.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.processes import offline_env, run_workflow  # noqa: E402

WORKFLOW = HERE / "linear_workflow.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-records", type=int, default=20000)
    args = parser.parse_args()

    times: dict[str, list[float]] = {"dd_assets": [], "composite": []}
    with tempfile.TemporaryDirectory() as homes:
        base_env = offline_env(Path(homes), BENCH_NUM_RECORDS=str(args.num_records))
        schedule = [("warm-up", "dd_assets"), ("warm-up", "composite")]
        for index in range(args.repeats):
            kinds = ("composite", "dd_assets") if index % 2 else ("dd_assets", "composite")
            schedule += [(f"run {index + 1}", kind) for kind in kinds]
        for label, kind in schedule:
            elapsed = run_workflow("per_stage" if kind == "dd_assets" else "composite", WORKFLOW, base_env)
            if label != "warm-up":
                times[kind].append(elapsed)
            print(f"{label:8s} {kind:10s} {elapsed:7.2f} s", flush=True)

    ours, theirs = statistics.median(times["dd_assets"]), statistics.median(times["composite"])
    print(f"\n{args.num_records} rows, 3 stages, {args.repeats} runs each (median wall time, whole processes)")
    print(f"dd_assets (dagster asset materialize): {ours:.2f} s")
    print(f"CompositeWorkflow.run():               {theirs:.2f} s")
    print(f"ratio dd_assets / CompositeWorkflow:   {ours / theirs:.3f}")
    pairs = [a / b for a, b in zip(times["dd_assets"], times["composite"], strict=True)]
    print(f"per-pair ratios: {', '.join(f'{r:.3f}' for r in pairs)} (median {statistics.median(pairs):.3f})")


if __name__ == "__main__":
    main()
