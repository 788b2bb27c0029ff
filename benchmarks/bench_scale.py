"""Scale-out figures of docs/scale.md, measured side by side in one run.

    python benchmarks/bench_scale.py [--partitions 8] [--rows 40] [--llm-partitions 4] [--llm-rows 160]

1. Partitions materialized per minute on this machine: the sampler root of ``benchmarks/partitioned_workflow.py``
   (``--rows`` rows per partition), one partition per run, (a) every run in one process and (b) one
   ``dagster asset materialize --partition K`` process per partition; on a local base_dir and on S3 (moto's
   server mode on a free local port).
2. A ``--llm-partitions``-partition LLM stage (``--llm-rows`` rows each, the test server answering in 200 ms,
   ``max_parallel_requests=4``) on S3: the partitions in turn in one process, against one run per partition
   launched at once with dd_assets' dagster-dask executor on a two-worker Dask cluster (``dask scheduler`` + two
   ``dask worker`` processes, each with its own temp directory), the way a backfill fans out.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
BIN = Path(sys.executable).parent
WORKFLOW = HERE / "partitioned_workflow.py"


def _env(home: Path, **extra: str) -> dict[str, str]:
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "DATA_DESIGNER_HOME": str(home / "dd_home"),
        "NEMO_TELEMETRY_ENABLED": "false",
        "PYTHONPATH": str(HERE.parent),
        "BENCH_KEY": "sk-bench",
        **extra,
    }


def _check(proc: subprocess.CompletedProcess | subprocess.Popen, what: str) -> None:
    if proc.returncode != 0:
        out = getattr(proc, "stderr", "") or ""
        sys.exit(f"{what} failed (exit {proc.returncode})\n{out[-4000:]}")


def _loop(selection: str, keys: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(WORKFLOW), "loop", selection, *keys], env=env, cwd=cwd, capture_output=True, text=True
    )
    _check(proc, f"loop {selection}")
    return time.perf_counter() - start


def _cli_each(selection: str, keys: list[str], env: dict[str, str], cwd: Path, *, at_once: bool) -> float:
    command = [str(BIN / "dagster"), "asset", "materialize", "-f", str(WORKFLOW), "--select", selection]
    start = time.perf_counter()
    if at_once:
        procs = [
            subprocess.Popen(
                [*command, "--partition", key],
                env=env,
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for key in keys
        ]
        for proc in procs:
            proc.stderr_text = proc.communicate()[1]
        for proc in procs:
            if proc.returncode != 0:
                sys.exit(f"{selection} failed:\n{proc.stderr_text[-4000:]}")
    else:
        for key in keys:
            _check(
                subprocess.run([*command, "--partition", key], env=env, cwd=cwd, capture_output=True, text=True),
                f"{selection} partition {key}",
            )
    return time.perf_counter() - start


def partitions_per_minute(root: Path, s3, partitions: int, rows: int) -> None:
    print(
        f"\n1. Partitions materialized per minute: sampler stage, {rows} rows per partition, one run each", flush=True
    )
    keys = [f"{i:0{len(str(partitions - 1))}d}" for i in range(partitions)]
    settings = {"BENCH_PARTITIONS": str(partitions), "BENCH_ROWS": str(rows)}
    bucket = s3.create_bucket("bench-partitions")
    places = {
        "local base_dir": {"DD_ASSETS_BASE_DIR": str(root / "local")},
        "S3 (moto server)": {
            "DD_ASSETS_BASE_DIR": f"s3://{bucket}/p",
            "BENCH_S3_ENDPOINT": s3.endpoint,
            "BENCH_S3_KEY": "bench-s3-key-id",
            "BENCH_S3_SECRET": "bench-s3-secret-value",
        },
    }
    for place, extra in places.items():
        for how in ("one process", "one CLI process per partition"):
            home = root / f"{place}-{how}".replace(" ", "_").replace("(", "").replace(")", "")
            env = _env(home, **settings, **extra)
            if how == "one process":
                elapsed = _loop("bench/root", keys, env, home)
            else:
                elapsed = _cli_each("bench/root", keys, env, home, at_once=False)
            print(
                f"  {place:18s} {how:31s} {partitions} partitions in {elapsed:6.2f} s = "
                f"{partitions / elapsed * 60:5.1f} per minute",
                flush=True,
            )


def llm_stage_on_dask(root: Path, s3, server, partitions: int, rows: int) -> None:
    print(
        f"\n2. A {partitions}-partition LLM stage ({rows} rows each, 200 ms per request, max_parallel_requests=4), "
        "S3 base_dir",
        flush=True,
    )
    from dd_assets_tests.servers import DaskCluster

    keys = [str(i) for i in range(partitions)]
    results = {}
    for how in ("one process", "dask"):
        bucket = s3.create_bucket(f"bench-llm-{how.replace(' ', '-')}")
        home = root / f"llm-{how.replace(' ', '_')}"
        env = _env(
            home,
            BENCH_PARTITIONS=str(partitions),
            BENCH_ROWS=str(rows),
            BENCH_ENDPOINT=server.endpoint,
            DD_ASSETS_BASE_DIR=f"s3://{bucket}/p",
            BENCH_S3_ENDPOINT=s3.endpoint,
            BENCH_S3_KEY="bench-s3-key-id",
            BENCH_S3_SECRET="bench-s3-secret-value",
        )
        _loop("bench/root", keys, env, home)  # the seed partitions, not timed
        server.reset()
        server.delay_s = 0.2
        if how == "one process":
            results[how] = _loop("bench/write", keys, env, home)
        else:
            cluster = DaskCluster(home / "dask", env, workers=2)
            try:
                results[how] = _cli_each(
                    "bench/write", keys, {**env, "BENCH_DASK_ADDRESS": cluster.address}, home, at_once=True
                )
            finally:
                cluster.stop()
        print(f"  {how:12s} {results[how]:7.2f} s  ({server.count('generation')} requests)", flush=True)
    print(f"  dask (2 workers) / one process = {results['dask'] / results['one process']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--llm-partitions", type=int, default=4)
    parser.add_argument("--llm-rows", type=int, default=160, help="rows per partition of the LLM stage")
    parser.add_argument("--only", choices=["partitions", "dask"], default=None)
    args = parser.parse_args()
    os.environ.setdefault("NEMO_TELEMETRY_ENABLED", "false")
    os.environ.update(BENCH_S3_KEY="bench-s3-key-id", BENCH_S3_SECRET="bench-s3-secret-value")
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")

    from dd_assets_tests.llm_server import FakeLLMServer
    from dd_assets_tests.servers import MotoS3Server

    server = FakeLLMServer().start()
    with tempfile.TemporaryDirectory() as tmp:
        s3 = MotoS3Server(Path(tmp))
        try:
            if args.only in (None, "partitions"):
                partitions_per_minute(Path(tmp), s3, args.partitions, args.rows)
            if args.only in (None, "dask"):
                llm_stage_on_dask(Path(tmp), s3, server, args.llm_partitions, args.llm_rows)
        finally:
            s3.stop()
            server.stop()


if __name__ == "__main__":
    main()
