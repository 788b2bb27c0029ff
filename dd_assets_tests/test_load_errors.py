"""A broken workflow file: the other workflows load, its error is an asset in the catalog, validation fails hard."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from dd_assets import WorkflowDefinitionError, build_workflow_definitions
from dd_assets.assets.load_errors import LOAD_ERROR_METADATA
from dd_assets.spec.yaml_loader import load_workflow_dir
from dd_assets_tests.conftest import cli_environment

BIN = Path(sys.executable).parent
GOOD = (
    "name: good\nstages:\n  - name: rows\n    num_records: 3\n"
    "    config: {columns: [{name: n, column_type: sampler, sampler_type: uuid, params: {}}]}\n"
)
BROKEN = (
    "name: broken\nstages:\n  - name: a\n    num_records: 3\n    config:\n      columns:\n"
    "        - {name: stock, column_type: sampler, sampler_type: uuid, params: {}}\n"
    "        - {name: x, column_type: expression, expr: '{{ stok }}'}\n"
)
WHERE = "broken.yaml: workflow 'broken', stage 'a', field 'config': column 'x' reads 'stok'"


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "good.yaml").write_text(GOOD)
    (folder / "broken.yaml").write_text(BROKEN)
    return folder


def test_one_broken_file_leaves_the_others_loaded_and_is_an_asset_naming_its_error(tmp_path, io_manager, instance):
    failures = []
    workflows = load_workflow_dir(_folder(tmp_path), failures)
    assert [w.name for w in workflows] == ["good"]
    defs = build_workflow_definitions(workflows, io_manager=io_manager, load_failures=failures)
    dg.Definitions.validate_loadable(defs)
    error_key = dg.AssetKey(["load_errors", "broken_yaml"])
    spec = next(spec for a in defs.assets for spec in a.specs if spec.key == error_key)
    assert WHERE in spec.description and "(did you mean 'stock'?)" in spec.description
    assert spec.group_name == "load_errors" and WHERE in spec.metadata[LOAD_ERROR_METADATA].value

    good = dg.materialize(defs.assets, resources=defs.resources, instance=instance, selection="good/rows")
    assert good.success
    broken = dg.materialize(
        defs.assets, resources=defs.resources, instance=instance, selection=[error_key], raise_on_error=False
    )
    assert not broken.success
    assert WHERE in broken.failure_data_for_node("load_errors__broken_yaml").error.message


def test_without_a_list_or_under_definitions_validation_a_broken_file_raises(tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    with pytest.raises(WorkflowDefinitionError, match=WHERE):
        load_workflow_dir(folder)
    monkeypatch.setenv(
        "DAGSTER_IS_DEFS_VALIDATION_CLI", "1"
    )  # what `dagster definitions validate` / `dg check defs` set
    with pytest.raises(WorkflowDefinitionError, match=WHERE):
        load_workflow_dir(folder, [])


def _cli(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = cli_environment(tmp_path, DD_ASSETS_WORKFLOWS_DIR=str(_folder(tmp_path)))
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_the_cli_with_a_broken_workflow_file(tmp_path):
    status = _cli([str(BIN / "dd-assets"), "status"], tmp_path)
    output = status.stdout + status.stderr
    assert status.returncode == 1 and "Traceback" not in output, output
    assert "good/rows" in status.stdout and "quickstart/customers" in status.stdout  # the other workflows
    errors = status.stderr.strip().splitlines()
    assert len(errors) == 1 and WHERE in errors[0], status.stderr

    preview = subprocess.run(
        [str(BIN / "dd-assets"), "preview", "broken/a"],
        env=cli_environment(tmp_path, DD_ASSETS_WORKFLOWS_DIR=str(tmp_path / "workflows")),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert preview.returncode == 2 and "Traceback" not in preview.stderr
    assert WHERE in preview.stderr and "unknown workflow 'broken'" in preview.stderr


def test_dagster_materializes_the_other_workflows_and_validation_fails_hard(tmp_path):
    dagster = str(BIN / "dagster")
    env = cli_environment(tmp_path, DD_ASSETS_WORKFLOWS_DIR=str(_folder(tmp_path)))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([dagster, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)

    materialized = run("asset", "materialize", "-m", "dd_assets.definitions", "--select", "good/rows")
    assert materialized.returncode == 0, materialized.stderr[-3000:]
    assert "Traceback" not in materialized.stderr and WHERE in materialized.stderr  # logged once, not raised
    validated = run("definitions", "validate", "-m", "dd_assets.definitions")
    assert validated.returncode == 1 and WHERE in validated.stdout + validated.stderr
