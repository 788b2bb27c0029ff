"""The README's commands run quietly: one line per stage, no warning of ours, nothing written outside the project;
``dg`` works in the checkout; the UI's metadata reads as tables and absolute paths."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import data_designer.config as dd
import pytest

from dd_assets import Stage, StageParquetIOManager, Workflow
from dd_assets_tests.conftest import cli_environment
from dd_assets_tests.helpers import llm_builder, materialize, metadata_of, sampler_builder

REPO = Path(__file__).resolve().parent.parent
QUICKSTART_STAGES = ("customers", "orders", "tickets", "customer_360", "export")


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the checkout's project (pyproject.toml and the package), so commands may write into it."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO / "pyproject.toml", root)
    shutil.copytree(REPO / "dd_assets", root / "dd_assets", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _demo_env(tmp_path: Path, project: Path) -> dict[str, str]:
    """The README demo's environment: its own HOME and DAGSTER_HOME (the example dagster.yaml), nothing else set."""
    env = cli_environment(tmp_path)
    for name in ("DD_ASSETS_BASE_DIR", "DATA_DESIGNER_HOME", "DATA_DESIGNER_MANAGED_ASSETS_PATH"):
        env.pop(name, None)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dd_assets" / "examples" / "dagster.yaml", Path(env["DAGSTER_HOME"]) / "dagster.yaml")
    env.update(HOME=str(home), PYTHONPATH=str(project), PYTHONWARNINGS="default")
    return env


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_the_readme_demo_prints_one_line_per_stage_and_writes_nothing_outside_the_project(tmp_path, project):
    assert "DAGSTER_HOME=$PWD/.dagster_home dg launch --assets 'key:quickstart/*'" in (REPO / "README.md").read_text()
    env = _demo_env(tmp_path, project)
    before = set(os.listdir(project))
    done = _run(["dg", "launch", "--assets", "key:quickstart/*"], env, project)
    output = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(output)
    assert not [line for line in output if "warning" in line.lower()], "\n".join(output)
    for stage in QUICKSTART_STAGES:
        assert sum(f"[quickstart/{stage}] completed: 300 rows" in line for line in output) == 1, "\n".join(output)
    assert len(output) <= 2 * len(QUICKSTART_STAGES), "\n".join(output)
    assert not (Path(env["HOME"]) / ".data-designer").exists()
    assert list(Path(env["HOME"]).iterdir()) == []
    assert set(os.listdir(project)) - before == {"data"}


def test_dagster_asset_materialize_keeps_working_with_only_dagsters_own_supersession_note(tmp_path, project):
    env = _demo_env(tmp_path, project)
    cmd = ["dagster", "asset", "materialize", "-m", "dd_assets.definitions", "--select", "key:quickstart/*"]
    done = _run(cmd, env, tmp_path)
    output = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(output)
    warning_lines = [line for line in output if "warning" in line.lower()]
    assert warning_lines and all("SupersessionWarning" in line for line in warning_lines), "\n".join(output)
    assert len(output) <= 2 * len(QUICKSTART_STAGES) + 2, "\n".join(output)
    assert not (Path(env["HOME"]) / ".data-designer").exists()


def test_dg_scaffold_defs_adds_a_workflow_component_the_checkout_loads(tmp_path, project):
    env = _demo_env(tmp_path, project)
    done = _run(["dg", "scaffold", "defs", "dd_assets.DataDesignerWorkflowComponent", "support_faq2"], env, project)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = project / "dd_assets" / "examples" / "defs" / "support_faq2"
    assert (folder / "defs.yaml").is_file() and (folder / "workflow.yaml").is_file()
    listed = _run(["dg", "list", "defs", "--json"], env, project)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "support_faq2/people" in listed.stdout and "quickstart/customers" in listed.stdout


def test_an_llm_stage_says_once_that_token_statistics_are_off(io_manager, instance, llm, llm_resource, caplog):
    wf = Workflow(
        name="quiet",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=3),
            Stage(name="llm", config=llm_builder("answer", "Say {{ n }}"), depends_on=["seed"]),
        ],
    )
    result = materialize(wf, io_manager, instance, resource=llm_resource)
    assert result.success
    records = [e for e in instance.all_logs(result.run_id) if e.user_message and e.step_key == "quiet__llm"]
    assert not [e for e in records if "column profile" in e.user_message]
    notes = [e for e in records if "token statistics" in e.user_message]
    assert len(notes) == 1 and notes[0].level == logging.INFO
    # preview takes the same path: no warning from Data Designer's profiler either
    builder = llm_builder("answer", "Say hi")
    builder.add_column(dd.SamplerColumnConfig(name="n", sampler_type="uuid", params={}))
    with caplog.at_level(logging.WARNING):
        llm_resource.get_data_designer().preview(builder, num_records=2)
    assert not [r for r in caplog.records if "column profile" in r.getMessage()]


def test_data_designers_own_drop_columns_deprecation_is_not_printed(io_manager, instance):
    wf = Workflow(
        name="dropper",
        stages=[
            Stage(
                name="a",
                config=sampler_builder(),
                num_records=4,
                output_processors=[dd.DropColumnsProcessorConfig(name="drop", column_names=["color"])],
            )
        ],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert materialize(wf, io_manager, instance).success
    assert not [w for w in caught if "inplace keyword in DataFrame.drop" in str(w.message)]


def test_dagster_uri_is_absolute_when_base_dir_is_relative(tmp_path, instance, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wf = Workflow(name="where", stages=[Stage(name="a", config=sampler_builder(), num_records=2)])
    io_manager = StageParquetIOManager(base_dir="data")
    result = materialize(wf, io_manager, instance)
    version = io_manager.read_record("where", "a")["version"]
    uri = metadata_of(result, ["where", "a"])["dagster/uri"]
    assert uri == str(tmp_path / "data" / "where" / "a" / "versions" / version)
    assert Path(uri).is_dir()


def test_the_launchpad_shows_no_setup_hint_of_doc_qa_on_other_assets():
    from dagster._core.snap.snap_to_yaml import default_values_yaml_from_type_snap

    from dd_assets.examples.definitions import build_example_definitions

    job = build_example_definitions().resolve_implicit_global_asset_job_def()
    snapshot = job.get_job_snapshot().config_schema_snapshot
    root = snapshot.get_config_snap(job.get_job_snapshot().mode_def_snaps[0].root_config_key)
    launchpad = default_values_yaml_from_type_snap(snapshot, root)
    assert "DD_ASSETS_LLM_ENDPOINT" not in launchpad and "setup_hint" not in launchpad
