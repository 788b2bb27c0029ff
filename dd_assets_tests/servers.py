"""Real servers the suite starts on free local ports and stops by process id: moto's S3 server, a Dask cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
S3_KEY_ENV, S3_SECRET_ENV = "DD_ASSETS_TEST_S3_KEY", "DD_ASSETS_TEST_S3_SECRET"
S3_CREDENTIALS = {S3_KEY_ENV: "testing-key-id", S3_SECRET_ENV: "testing-secret-value"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own session, and everything it started, by process group id."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class MotoS3Server:
    """moto's S3 server mode (``moto_server``) on a free local port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / "moto.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start: see {log_dir / 'moto.log'}") from None
                time.sleep(0.2)

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_CREDENTIALS[S3_KEY_ENV],
            aws_secret_access_key=S3_CREDENTIALS[S3_SECRET_ENV],
            region_name="us-east-1",
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def storage_options(self) -> dict:
        """``StageParquetIOManager`` settings for this server: the endpoint, and credentials by variable name."""
        return {
            "storage_options": {"endpoint_url": self.endpoint, "client_kwargs": {"region_name": "us-east-1"}},
            "storage_secrets": {"key": S3_KEY_ENV, "secret": S3_SECRET_ENV},
        }

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


class DaskCluster:
    """A ``dask scheduler`` and ``workers`` ``dask worker`` processes, each with its own local and temp directory."""

    def __init__(self, root: Path, env: dict[str, str], workers: int = 2) -> None:
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.logs = []
        dask = str(BIN / "dask")
        self._start("scheduler", [dask, "scheduler", "--host", "127.0.0.1", "--port", str(self.port)], env)
        for index in range(workers):
            local = root / f"worker{index}"
            (local / "tmp").mkdir(parents=True, exist_ok=True)
            self._start(
                f"worker{index}",
                [
                    dask,
                    "worker",
                    self.address,
                    "--nworkers",
                    "1",
                    "--nthreads",
                    "1",  # Dagster steps are not thread-safe (dagster-dask's own advice)
                    "--no-dashboard",
                    "--name",
                    f"worker{index}",
                    "--local-directory",
                    str(local),
                ],
                {**env, "TMPDIR": str(local / "tmp")},  # no shared work directory: each worker has its own
            )
        self.wait_for_workers(workers)

    def _start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        self.logs.append(log)
        if name == "scheduler":
            command = [*command, "--no-dashboard"]
        self.procs.append(
            subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )

    def wait_for_workers(self, count: int, timeout_s: float = 120) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout_s) as client:
            client.wait_for_workers(count, timeout=timeout_s)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)
        for log in self.logs:
            log.close()
