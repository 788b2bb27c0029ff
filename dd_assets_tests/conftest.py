"""Shared fixtures. Data Designer reads its home and telemetry settings at import, so set them first."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

os.environ["NEMO_TELEMETRY_ENABLED"] = "false"
# The checkout on every subprocess's path: the wheel (and so the editable install) holds the library only, and the
# subprocesses of the end-to-end tests import fixture modules of dd_assets_tests.
CHECKOUT = str(Path(__file__).resolve().parent.parent)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (CHECKOUT, os.environ.get("PYTHONPATH")) if p)

# Tests never reach the internet: the test process refuses to look up or connect to any host but this machine's
# (subprocesses the tests start run their own checks, e.g. fixtures/network_audit.py).
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "", None, socket.gethostname()}


def _refuse_remote_hosts(event: str, args: tuple) -> None:
    host = None
    if event == "socket.getaddrinfo":
        host = args[0].decode() if isinstance(args[0], bytes) else args[0]
    elif event == "socket.connect" and isinstance(args[1], tuple) and args[1]:
        host = args[1][0]
    else:
        return
    if host not in _LOCAL_HOSTS and not str(host).startswith("127."):
        raise OSError(f"the test suite never reaches the network: refused a connection to {host!r}")


sys.addaudithook(_refuse_remote_hosts)
os.environ.setdefault("DATA_DESIGNER_HOME", tempfile.mkdtemp(prefix="dd_home_"))
os.environ.setdefault("DATA_DESIGNER_MANAGED_ASSETS_PATH", os.path.join(os.environ["DATA_DESIGNER_HOME"], "assets"))

import dagster as dg  # noqa: E402
import pytest  # noqa: E402

from dd_assets import DataDesignerResource, StageParquetIOManager  # noqa: E402
from dd_assets_tests.llm_server import FakeLLMServer  # noqa: E402

TEST_PROVIDER = "test_llm"
TEST_API_KEY_VALUE = "sk-test-SECRET-0123456789abcdef"
TEST_API_KEY_ENV = "DD_ASSETS_TEST_API_KEY"
# Providers name their key by environment variable; every test provider uses this one.
os.environ.setdefault(TEST_API_KEY_ENV, TEST_API_KEY_VALUE)


@pytest.fixture(params=["per_stage", "concurrent"])
def in_both_execution_modes(request, monkeypatch) -> str:
    """Runs a test in both execution modes (``pytestmark = pytest.mark.usefixtures(...)``): they must behave alike."""
    from dd_assets_tests import helpers

    monkeypatch.setattr(helpers, "EXECUTION", request.param)
    return request.param


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def io_manager(tmp_path) -> StageParquetIOManager:
    return StageParquetIOManager(base_dir=str(tmp_path / "data"))


@pytest.fixture(scope="session")
def llm_server():
    server = FakeLLMServer().start()
    yield server
    server.stop()


@pytest.fixture
def llm(llm_server) -> FakeLLMServer:
    """The shared test server with its counters reset."""
    llm_server.reset()
    return llm_server


@pytest.fixture
def llm_resource(llm, monkeypatch) -> DataDesignerResource:
    """A resource pointing at the test server; the key is given as an environment variable name."""
    monkeypatch.setenv(TEST_API_KEY_ENV, TEST_API_KEY_VALUE)
    return DataDesignerResource(
        model_providers=[
            {
                "name": TEST_PROVIDER,
                "endpoint": llm.endpoint,
                "provider_type": "openai",
                "api_key": TEST_API_KEY_ENV,
            }
        ]
    )


def cli_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a real ``dagster`` / ``dask`` subprocess: its own DAGSTER_HOME, telemetry off, no DD_ASSETS_*."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DD_ASSETS_")}
    env.update(
        DAGSTER_HOME=str(home),
        DD_ASSETS_BASE_DIR=str(tmp_path / "data"),
        NEMO_TELEMETRY_ENABLED="false",
        DATA_DESIGNER_HOME=str(tmp_path / "dd_home"),
    )
    env.update(extra)
    return env


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """:func:`cli_environment` for this test's ``tmp_path``."""
    return cli_environment(tmp_path)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server mode on a free local port, for the whole session; stopped by process id."""
    from dd_assets_tests.servers import MotoS3Server

    server = MotoS3Server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, request) -> str:
    """A fresh bucket on the S3 server, its credentials in the environment (by variable name only)."""
    from dd_assets_tests.servers import S3_CREDENTIALS

    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    return s3_server.create_bucket(f"{name}-{os.urandom(3).hex()}")


@pytest.fixture
def s3_io_manager(s3_server, s3_bucket, tmp_path) -> StageParquetIOManager:
    """A ``StageParquetIOManager`` on ``s3://<fresh bucket>/prefix`` with its own local work directory."""
    return StageParquetIOManager(
        base_dir=f"s3://{s3_bucket}/prefix", local_work_dir=str(tmp_path / "work"), **s3_server.storage_options()
    )
