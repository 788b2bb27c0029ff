"""Shared fixtures. Data Designer reads its home and telemetry settings at import, so set them first."""

from __future__ import annotations

import os
import tempfile

os.environ["NEMO_TELEMETRY_ENABLED"] = "false"
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
