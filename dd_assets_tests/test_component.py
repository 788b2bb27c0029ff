"""The Dagster Component and the dg CLI, in a real dg project in a temp directory (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dd_assets_tests.test_cli_e2e import _dagster, _env, _record

BIN = Path(sys.executable).parent

PYPROJECT = """\
[project]
name = "myproj"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["dd_assets"]

[tool.dg]
directory_type = "project"

[tool.dg.project]
root_module = "myproj"
registry_modules = ["dd_assets"]
"""

DEFINITIONS = """\
from pathlib import Path

import dagster as dg


@dg.definitions
def defs():
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
"""


@pytest.fixture
def dg_project(tmp_path):
    root = tmp_path / "proj"
    package = root / "src" / "myproj"
    (package / "defs").mkdir(parents=True)
    (root / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "definitions.py").write_text(DEFINITIONS)
    env = _env(tmp_path)
    # the project's package first, then whatever dd_assets this test runs (a worktree's, not only the installed one)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root / "src"), env.get("PYTHONPATH")) if p)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return root, env


def _dg(args: list[str], root: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dg"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=600)


def test_dg_lists_scaffolds_checks_and_launches_the_component(dg_project):
    root, env = dg_project
    listed = _dg(["list", "components", "--json"], root, env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "dd_assets.DataDesignerWorkflowComponent" in listed.stdout

    scaffolded = _dg(["scaffold", "defs", "dd_assets.DataDesignerWorkflowComponent", "faq"], root, env)
    assert scaffolded.returncode == 0, scaffolded.stderr[-2000:]
    folder = root / "src" / "myproj" / "defs" / "faq"
    assert (folder / "defs.yaml").is_file() and (folder / "workflow.yaml").is_file()

    checked = _dg(["check", "defs"], root, env)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    defs = _dg(["list", "defs", "--json"], root, env)
    assert defs.returncode == 0, defs.stderr[-2000:]
    keys = {asset["asset_key"] for asset in json.loads(defs.stdout)["assets"]}
    assert keys == {"faq/people", "faq/greetings"}

    launched = _dg(["launch", "--assets", "*"], root, env)
    assert launched.returncode == 0, launched.stderr[-3000:]
    record = json.loads((root / "data" / "faq" / "greetings" / "stage.json").read_text())
    assert record["status"] == "completed" and record["output_rows"] == 100


def test_component_with_an_invalid_workflow_fails_dg_check(dg_project):
    root, env = dg_project
    folder = root / "src" / "myproj" / "defs" / "broken"
    folder.mkdir()
    (folder / "defs.yaml").write_text(
        "type: dd_assets.DataDesignerWorkflowComponent\nattributes:\n  workflow_file: workflow.yaml\n"
    )
    (folder / "workflow.yaml").write_text(
        "name: broken\nstages:\n  - name: a\n"
        "    config: {columns: [{name: x, column_type: expression, expr: '{{ y }}'}]}\n"
    )
    checked = _dg(["check", "defs"], root, env)
    assert checked.returncode != 0
    output = checked.stdout + checked.stderr
    assert "workflow.yaml: workflow 'broken', stage 'a', field 'config': column 'x' reads 'y'" in output
    assert not (root / "data").exists()


def test_a_broken_component_leaves_the_others_loaded_and_shows_its_error_as_an_asset(dg_project):
    root, env = dg_project
    test_component_with_an_invalid_workflow_fails_dg_check(dg_project)  # `dg check defs` fails hard on it
    good = root / "src" / "myproj" / "defs" / "good"
    good.mkdir()
    (good / "defs.yaml").write_text(
        "type: dd_assets.DataDesignerWorkflowComponent\nattributes:\n  workflow:\n    name: good\n    stages:\n"
        "      - {name: s, num_records: 3, config: {columns: [{name: c, column_type: sampler, sampler_type: uuid,"
        " params: {}}]}}\n"
    )
    listed = _dg(["list", "defs", "--json"], root, env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assets = {asset["asset_key"]: asset for asset in json.loads(listed.stdout)["assets"]}
    assert set(assets) == {"good/s", "load_errors/broken"}
    assert "workflow 'broken', stage 'a', field 'config'" in assets["load_errors/broken"]["description"]
    launched = _dg(["launch", "--assets", "good/s"], root, env)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert _dg(["check", "defs"], root, env).returncode != 0


def test_inline_workflow_component_and_two_components_share_resources(dg_project):
    root, env = dg_project
    for name in ("one", "two"):
        folder = root / "src" / "myproj" / "defs" / name
        folder.mkdir()
        (folder / "defs.yaml").write_text(
            "type: dd_assets.DataDesignerWorkflowComponent\n"
            "attributes:\n"
            "  workflow:\n"
            f"    name: {name}\n"
            "    stages:\n"
            "      - name: s\n"
            "        num_records: 3\n"
            "        config: {columns: [{name: c, column_type: sampler, sampler_type: category,"
            " params: {values: [x, y]}}]}\n"
        )
    checked = _dg(["check", "defs"], root, env)
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    launched = _dg(["launch", "--assets", "one/s,two/s"], root, env)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert json.loads((root / "data" / "two" / "s" / "stage.json").read_text())["output_rows"] == 3


def test_yaml_only_workflows_materialize_from_the_cli(tmp_path):
    env = _env(tmp_path, DD_ASSETS_EXAMPLE_FORM="yaml")
    proc = _dagster(
        ["asset", "materialize", "-m", "dd_assets.definitions", "--select", "group:quickstart or group:support_faq"],
        env,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _record(tmp_path, "quickstart", "export")["output_rows"] == 300
    assert _record(tmp_path, "support_faq", "entries")["output_rows"] == 40


def test_definitions_validate_fails_on_a_bad_workflow_file_and_writes_nothing(tmp_path):
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "bad.yaml").write_text(
        "name: bad\nstages:\n  - name: a\n    config: {columns: []}\n    depend_on: []\n"
    )
    env = _env(tmp_path, DD_ASSETS_WORKFLOWS_DIR=str(workflows))
    proc = _dagster(["definitions", "validate", "-m", "dd_assets.definitions"], env, tmp_path)
    assert proc.returncode != 0
    assert (
        "bad.yaml: workflow 'bad', stage 'a', field 'depend_on': unknown key 'depend_on'" in proc.stdout + proc.stderr
    )
    assert not (tmp_path / "data").exists()


def test_a_component_runs_its_workflow_concurrently(dg_project):
    root, env = dg_project
    folder = root / "src" / "myproj" / "defs" / "conc"
    folder.mkdir()
    (folder / "defs.yaml").write_text(
        "type: dd_assets.DataDesignerWorkflowComponent\n"
        "attributes:\n"
        "  execution: concurrent\n"
        "  max_concurrent_stages: 2\n"
        "  workflow:\n"
        "    name: conc\n"
        "    stages:\n"
        "      - {name: a, num_records: 4, config: {columns: [{name: c, column_type: sampler,"
        " sampler_type: category, params: {values: [x, y]}}]}}\n"
        "      - {name: b, depends_on: [a], config: {columns: [{name: d, column_type: expression,"
        " expr: '{{ c }}!'}]}}\n"
    )
    launched = _dg(["launch", "--assets", "conc/a,conc/b"], root, env)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "conc__stages" in launched.stdout + launched.stderr
    assert json.loads((root / "data" / "conc" / "b" / "stage.json").read_text())["output_rows"] == 4


def test_an_unknown_component_attribute_is_refused_with_a_did_you_mean(dg_project):
    root, env = dg_project
    folder = root / "src" / "myproj" / "defs" / "typo"
    folder.mkdir()
    (folder / "defs.yaml").write_text(
        "type: dd_assets.DataDesignerWorkflowComponent\n"
        "attributes:\n"
        "  base_dri: elsewhere\n"
        "  run_config: {buffer_size: 7, note: sk-live-0123456789-SECRET-abcdef}\n"
        "  workflow:\n"
        "    name: typo\n"
        "    stages:\n"
        "      - {name: s, num_records: 2, config: {columns: [{name: c, column_type: sampler,"
        " sampler_type: category, params: {values: [x]}}]}}\n"
    )
    validated = _dagster(["definitions", "validate", "-f", str(root / "src/myproj/definitions.py")], env, root)
    assert validated.returncode != 0
    output = validated.stdout + validated.stderr
    assert "attributes.base_dri at" in output and "defs.yaml:3" in output
    assert "unknown DataDesignerWorkflowComponent field 'base_dri' (did you mean 'base_dir'?)" in output
    assert "SECRET" not in output  # the error names the attribute, never the attributes' values
    checked = _dg(["check", "defs"], root, env)  # dg's schema check refuses it too, naming the key and line
    assert checked.returncode != 0 and "'base_dri' was unexpected" in checked.stdout + checked.stderr
    assert not (root / "elsewhere").exists() and not (root / "data").exists()


@pytest.mark.parametrize(
    ("attribute", "workflow_field", "wrong"),
    [
        ("execution", "execution", "parallel"),
        ("max_concurrent_stages", "max_concurrent_stages", 0),
        ("automation", "automation_condition", {"on_crn": "0 6 * * *"}),
        ("owners", "owners", [3]),
        ("tags", "tags", {"tier": 1}),
    ],
)
def test_the_components_workflow_overrides_are_the_workflows_own_field_definitions(attribute, workflow_field, wrong):
    from pydantic import ValidationError

    from dd_assets import DataDesignerWorkflowComponent, Workflow
    from dd_assets.spec.field_specs import field_specs

    spec = field_specs(Workflow)[workflow_field]
    assert DataDesignerWorkflowComponent.model_fields[attribute].description.startswith(spec.description)
    with pytest.raises(ValidationError) as refused:
        DataDesignerWorkflowComponent(workflow_file="workflow.yaml", **{attribute: wrong})
    assert refused.value.errors()[0]["loc"][0] == attribute
