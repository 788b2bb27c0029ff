"""What the benchmarks that time whole processes share: an offline environment, a timed command, and one run of a
benchmark workflow as dd_assets (``dagster asset materialize``) or as Data Designer's ``CompositeWorkflow``."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def offline_env(homes: Path, **extra: str) -> dict[str, str]:
    """This environment plus a fresh Dagster home (telemetry off) and Data Designer home under ``homes``."""
    dagster_home = homes / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "DATA_DESIGNER_HOME": str(homes / "dd_home"),
        "NEMO_TELEMETRY_ENABLED": "false",
        **extra,
    }


def timed(cmd: list[str], env: dict[str, str], cwd: str) -> float:
    """Wall seconds of ``cmd``; exits the benchmark with the command's output when it fails."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return elapsed


def run_workflow(kind: str, workflow_file: Path, env: dict[str, str]) -> float:
    """Wall seconds of one whole-process run of ``workflow_file`` into fresh output directories.

    ``kind`` is ``composite`` (``python <workflow> composite <dir>``: ``CompositeWorkflow.run()``) or a dd_assets
    execution mode, ``per_stage`` or ``concurrent``, optionally with ``:<executor>`` (``in_process`` by default),
    run as ``dagster asset materialize --select '*'``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        env = {**env, "DD_ASSETS_BASE_DIR": str(Path(tmp) / "data")}
        if kind == "composite":
            cmd = [sys.executable, str(workflow_file), "composite", str(Path(tmp) / "artifacts")]
        else:
            execution, _, executor = kind.partition(":")
            env.update(BENCH_EXECUTION=execution, BENCH_EXECUTOR=executor or "in_process")
            cmd = [str(BIN / "dagster"), "asset", "materialize", "-f", str(workflow_file), "--select", "*"]
        return timed(cmd, env, tmp)
