"""What the benchmarks that time whole processes share: an offline environment, and a timed command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


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
