"""The LLM test project (``fixtures/llm_project.py``) run by the real dagster CLI in subprocesses, and killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dd_assets_tests.conftest import cli_environment

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).parent / "fixtures" / "llm_project.py"


def llm_env(tmp_path: Path, llm, **extra: str) -> dict[str, str]:
    """The CLI environment of the project, pointed at the local test LLM server."""
    extra.setdefault("DD_ASSETS_TEST_KEY", "sk-reliability-test-key")
    return cli_environment(tmp_path, DD_ASSETS_TEST_ENDPOINT=llm.endpoint, **extra)


def materialize_cmd(select: str, *extra: str) -> list[str]:
    return [str(BIN / "dagster"), "asset", "materialize", "-f", str(PROJECT), "--select", select, *extra]


def run(select: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Materialize ``select`` and wait for it."""
    return subprocess.run(materialize_cmd(select), env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def kill_when(cmd: list[str], env: dict, cwd: Path, ready: Callable[[], bool], timeout_s: float = 120) -> None:
    """Start ``cmd`` in its own session and SIGKILL all of it once ``ready()`` (or after ``timeout_s``)."""
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not ready():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
