"""End to end: the real dagster CLI in a subprocess, on the example project."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dd_assets_tests.conftest import cli_environment

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return cli_environment(tmp_path, **extra)


def _dagster(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dagster"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def _record(tmp_path: Path, workflow: str, stage: str) -> dict:
    return json.loads((tmp_path / "data" / workflow / stage / "stage.json").read_text())


def test_quickstart_materializes_from_the_cli(tmp_path):
    proc = _dagster(
        ["asset", "materialize", "-m", "dd_assets.definitions", "--select", "group:quickstart"],
        _env(tmp_path),
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("customers", "orders", "tickets", "customer_360", "export"):
        record = _record(tmp_path, "quickstart", stage)
        assert record["status"] == "completed" and record["output_rows"] == 300, stage
    export = pq.read_table(
        tmp_path / "data" / "quickstart" / "export" / _record(tmp_path, "quickstart", "export")["files"][0]
    )
    assert export.column_names == ["id", "summary", "follow_up"]
    orders = pq.read_schema(
        tmp_path / "data" / "quickstart" / "orders" / _record(tmp_path, "quickstart", "orders")["files"][0]
    )
    assert "unit_price" not in orders.names and "order_total" in orders.names
    # nothing but what the test pointed somewhere: no ./artifacts from Data Designer's default artifact path, and
    # not even Data Designer's home (DATA_DESIGNER_HOME points into tmp_path): a stage without models writes none
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dagster_home", "data"]


def test_single_stage_selection_and_run_config_from_the_cli(tmp_path):
    env = _env(tmp_path)
    config = json.dumps({"ops": {"quickstart__customers": {"config": {"num_records": 25}}}})
    proc = _dagster(
        [
            "asset",
            "materialize",
            "-m",
            "dd_assets.definitions",
            "--select",
            "quickstart/customers",
            "--config-json",
            config,
        ],
        env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _record(tmp_path, "quickstart", "customers")["output_rows"] == 25
    assert not (tmp_path / "data" / "quickstart" / "orders").exists()


def test_doc_qa_runs_against_a_local_llm_server(tmp_path, llm):
    env = _env(tmp_path, DD_ASSETS_LLM_ENDPOINT=llm.endpoint, DD_ASSETS_LLM_API_KEY="local-test-key")
    proc = _dagster(["asset", "materialize", "-m", "dd_assets.definitions", "--select", "group:doc_qa"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    drafts = _record(tmp_path, "doc_qa", "drafts")
    chatml = _record(tmp_path, "doc_qa", "chatml")
    assert drafts["output_rows"] == chatml["output_rows"] == 12
    assert llm.count("health_check") == 1
    assert llm.count("generation") == 12 * 3
    table = pq.read_table(tmp_path / "data" / "doc_qa" / "chatml" / chatml["files"][0])
    assert table.column_names == ["messages"]
    first = table.column("messages")[0].as_py()
    messages = json.loads(first) if isinstance(first, str) else first
    assert [m["role"] for m in messages] == ["user", "assistant"]
    drafts_schema = pq.read_schema(tmp_path / "data" / "doc_qa" / "drafts" / drafts["files"][0])
    assert {"question", "answer"} <= set(drafts_schema.names) and "chunk_summary" not in drafts_schema.names
    assert "Bearer local-test-key" in llm.auth_headers  # read from DD_ASSETS_LLM_API_KEY in the run's process ...
    assert "local-test-key" not in proc.stdout + proc.stderr  # ... never written into config or logs


def test_doc_qa_without_a_provider_fails_before_generation(tmp_path, llm):
    proc = _dagster(
        ["asset", "materialize", "-m", "dd_assets.definitions", "--select", "doc_qa/drafts"], _env(tmp_path), tmp_path
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "workflow 'doc_qa', stage 'drafts'" in output
    assert "DD_ASSETS_LLM_ENDPOINT" in output
    assert llm.count() == 0
    assert not (tmp_path / "data" / "doc_qa" / "drafts" / "stage.json").exists()


@pytest.mark.parametrize("command", [["definitions", "validate", "-m", "dd_assets.definitions"]])
def test_definitions_validate(tmp_path, command):
    proc = _dagster(command, _env(tmp_path), REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_workspace_yaml_loads_both_workflows(tmp_path):
    proc = _dagster(["definitions", "validate", "-w", str(REPO / "workspace.yaml")], _env(tmp_path), REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    script = (
        "from dd_assets.definitions import defs\n"
        "keys = sorted(k.to_user_string() for a in defs.assets for k in a.keys)\n"
        "print(keys)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path), capture_output=True, text=True, cwd=REPO)
    assert "quickstart/customer_360" in out.stdout and "doc_qa/chatml" in out.stdout


def test_the_shipped_dagster_yaml_makes_a_quiet_instance_with_run_and_pool_limits(tmp_path):
    import shutil

    import dagster as dg

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dd_assets" / "examples" / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.telemetry_enabled is False
        assert instance.global_op_concurrency_default_limit == 2
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 4
    assert "cp dd_assets/examples/dagster.yaml .dagster_home/" in (REPO / "README.md").read_text()


def test_a_token_budget_in_the_run_config_stops_a_stage_from_the_cli(tmp_path, llm):
    env = _env(tmp_path, DD_ASSETS_LLM_ENDPOINT=llm.endpoint, DD_ASSETS_LLM_API_KEY="local-test-key")
    materialize = ["asset", "materialize", "-m", "dd_assets.definitions", "--select", "doc_qa/drafts"]
    small = json.dumps({"ops": {"doc_qa__drafts": {"config": {"token_budget": 50}}}})
    proc = _dagster([*materialize, "--config-json", small], env, tmp_path)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "workflow 'doc_qa', stage 'drafts': token budget spent:" in output and "token_budget is 50" in output
    assert llm.count("generation") < 12 * 3  # it stopped sending
    assert not (tmp_path / "data" / "doc_qa" / "drafts" / "stage.json").exists()

    large = json.dumps({"ops": {"doc_qa__drafts": {"config": {"token_budget": 1_000_000}}}})
    proc = _dagster([*materialize, "--config-json", large], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _record(tmp_path, "doc_qa", "drafts")["output_rows"] == 12


def test_doc_qa_keyless_validates_and_materializes_from_the_cli(tmp_path, llm):
    # the documented keyless setup: DD_ASSETS_LLM_ENDPOINT set, DD_ASSETS_LLM_API_KEY unset ("api_key": None)
    env = _env(tmp_path, DD_ASSETS_LLM_ENDPOINT=llm.endpoint)
    llm.auth_headers.clear()
    validated = _dagster(["definitions", "validate", "-m", "dd_assets.definitions"], env, REPO)
    assert validated.returncode == 0, validated.stdout[-2000:] + validated.stderr[-2000:]
    proc = _dagster(["asset", "materialize", "-m", "dd_assets.definitions", "--select", "doc_qa/drafts"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _record(tmp_path, "doc_qa", "drafts")["output_rows"] == 12
    assert llm.auth_headers == {""}  # no Authorization header
