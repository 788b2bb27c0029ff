"""The YAML format: same assets as Python, the shipped JSON Schema, and every load-time error."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml

from dd_assets import DataDesignerStageTranslator, Workflow, WorkflowDefinitionError, build_workflow_definitions
from dd_assets.examples.doc_qa import doc_qa_workflow
from dd_assets.examples.quickstart import quickstart_workflow
from dd_assets.yaml_loader import SCHEMA_FILE, load_workflow_dir, workflow_json_schema
from dd_assets_tests.helpers import materialize, sampler_builder

EXAMPLES = Path(__file__).resolve().parents[1] / "dd_assets" / "examples" / "yaml"


def _spec_fields(wf: Workflow) -> dict:
    translator = DataDesignerStageTranslator()
    out = {}
    for stage in wf.stages:
        spec = translator.get_asset_spec(wf, stage)
        out[spec.key] = (
            spec.group_name,
            spec.kinds,
            spec.code_version,
            spec.description,
            sorted(d.asset_key.to_user_string() for d in spec.deps),
            {k: str(v) for k, v in spec.metadata.items()},
        )
    return out


@pytest.mark.parametrize(("python", "name"), [(quickstart_workflow, "quickstart"), (doc_qa_workflow, "doc_qa")])
def test_yaml_examples_produce_the_same_assets_as_python(python, name):
    assert _spec_fields(Workflow.from_yaml(EXAMPLES / f"{name}.yaml")) == _spec_fields(python())


def test_yaml_quickstart_materializes_like_python(io_manager, instance):
    result = materialize(Workflow.from_yaml(EXAMPLES / "quickstart.yaml"), io_manager, instance)
    assert result.success
    assert io_manager.read_stage("quickstart", "export").columns == ["id", "summary", "follow_up"]
    assert io_manager.read_stage("quickstart", "customer_360").num_rows == 300


def test_shipped_json_schema_is_current():
    assert json.loads(SCHEMA_FILE.read_text()) == json.loads(json.dumps(workflow_json_schema()))
    assert "depends_on" in workflow_json_schema()["$defs"]["StageModel"]["properties"]


def _write(tmp_path: Path, text: str, name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


SAMPLER = """
      columns:
        - {name: n, column_type: sampler, sampler_type: uniform, params: {low: 0, high: 9}, convert_to: int}
        - {name: color, column_type: sampler, sampler_type: category, params: {values: [red, blue]}}
"""


def _stage(name: str, extra: str = "", config: str = SAMPLER) -> str:
    return f"  - name: {name}\n    config:{textwrap.indent(textwrap.dedent(config), '      ')}{extra}"


def _workflow_text(*stages: str, name: str = "wf") -> str:
    return f"name: {name}\nstages:\n" + "\n".join(stages) + "\n"


def _load_error(tmp_path: Path, text: str) -> str:
    path = _write(tmp_path, text)
    with pytest.raises(WorkflowDefinitionError) as info:
        Workflow.from_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


def test_inline_config_external_keys_and_import_paths(tmp_path):
    path = _write(
        tmp_path,
        _workflow_text(
            _stage("a"),
            _stage("b"),
            _stage(
                "c",
                "\n    depends_on: [a, b, raw/docs]\n    combine: dd_assets_tests.fixtures.callables:first_two"
                "\n    on_success: dd_assets_tests.fixtures.callables:final_output\n    on_success_version: '2'"
                "\n    selection_strategy: {index: 0, num_partitions: 2}\n    sampling_strategy: shuffle",
                config="\n      columns:\n        - {name: x, column_type: expression, expr: '{{ n }}'}\n",
            ),
        ),
    )
    wf = Workflow.from_yaml(path)
    stage = wf.stage("c")
    assert stage.depends_on == ("a", "b", dg.AssetKey(["raw", "docs"]))
    assert stage.combine.__name__ == "first_two" and stage.on_success.__name__ == "final_output"
    assert stage.selection_strategy.num_partitions == 2 and stage.sampling_strategy.value == "shuffle"


def test_relative_seed_path_in_config_file_resolves_against_the_file(tmp_path, io_manager, instance):
    import pandas as pd

    (tmp_path / "configs" / "seeds").mkdir(parents=True)
    pd.DataFrame({"text": ["a", "b", "c"]}).to_parquet(tmp_path / "configs" / "seeds" / "s.parquet")
    (tmp_path / "configs" / "up.yaml").write_text(
        yaml.safe_dump(
            {
                "columns": [{"name": "upper", "column_type": "expression", "expr": "{{ text | upper }}"}],
                "seed_config": {"source": {"seed_type": "local", "path": "seeds/s.parquet"}},
            }
        )
    )
    path = _write(tmp_path, "name: seeded\nstages:\n  - {name: up, config: configs/up.yaml}\n")
    materialize(Workflow.from_yaml(path), io_manager, instance)
    assert list(io_manager.read_stage("seeded", "up").to_pandas()["upper"]) == ["A", "B", "C"]


# --- the load-time validation suite: one test per mistake, asserting on the message -------------------------


def test_unknown_key_suggests_the_nearest(tmp_path):
    message = _load_error(tmp_path, _workflow_text(_stage("a"), _stage("b", "\n    depend_on: [a]")))
    assert (
        "workflow 'wf', stage 'b', field 'depend_on': unknown key 'depend_on' (did you mean 'depends_on'?)" in message
    )


def test_unknown_top_level_key(tmp_path):
    message = _load_error(tmp_path, _workflow_text(_stage("a")) + "stagez: []\n")
    assert "unknown key 'stagez' (did you mean 'stages'?)" in message


def test_cycle(tmp_path):
    message = _load_error(
        tmp_path, _workflow_text(_stage("a", "\n    depends_on: [b]"), _stage("b", "\n    depends_on: [a]"))
    )
    assert "field 'depends_on': dependency cycle: " in message
    assert "a -> b -> a" in message or "b -> a -> b" in message


def test_unknown_upstream(tmp_path):
    message = _load_error(tmp_path, _workflow_text(_stage("a", "\n    depends_on: [ghost]")))
    assert "stage 'a', field 'depends_on': unknown upstream stage 'ghost'" in message


def test_duplicate_stage(tmp_path):
    message = _load_error(tmp_path, _workflow_text(_stage("a"), _stage("a")))
    assert "stage 'a', field 'name': duplicate stage name" in message


@pytest.mark.parametrize("bad", ["''", "'..'", "'a/b'", "'has space'"])
def test_invalid_stage_name(tmp_path, bad):
    message = _load_error(tmp_path, _workflow_text(_stage(bad)))
    assert "workflow 'wf'" in message and "field 'name'" in message


@pytest.mark.parametrize("bad", ["''", "'..'", "'a/b'", "'has space'"])
def test_invalid_workflow_name(tmp_path, bad):
    message = _load_error(tmp_path, _workflow_text(_stage("a"), name=bad))
    assert "workflow name" in message and "field 'name'" in message


def test_missing_config_file(tmp_path):
    message = _load_error(tmp_path, "name: wf\nstages:\n  - {name: a, config: configs/nope.yaml}\n")
    assert "workflow 'wf', stage 'a', field 'config': config file 'configs/nope.yaml' not found" in message


def test_unreadable_config_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("columns: [unclosed\n")
    message = _load_error(tmp_path, "name: wf\nstages:\n  - {name: a, config: bad.yaml}\n")
    assert "stage 'a', field 'config'" in message and "cannot be read" in message


def test_invalid_yaml(tmp_path):
    message = _load_error(tmp_path, "name: wf\nstages: [\n")
    assert "invalid YAML" in message


def test_config_data_designer_rejects(tmp_path):
    message = _load_error(
        tmp_path,
        _workflow_text(_stage("a", config="\n      columns:\n        - {name: x, column_type: sampler}\n")),
    )
    assert "stage 'a', field 'config': invalid Data Designer config" in message


def test_template_reading_an_unknown_column(tmp_path):
    message = _load_error(
        tmp_path,
        _workflow_text(
            _stage("a"),
            _stage(
                "b",
                "\n    depends_on: [a]",
                config="\n      columns:\n        - {name: x, column_type: expression, expr: '{{ colour }}'}\n",
            ),
        ),
    )
    assert "stage 'b', field 'config': column 'x' reads 'colour', which neither this stage nor its upstreams" in message
    assert "available: color, n)" in message  # not the failing column 'x' itself


def test_a_column_reading_a_misspelt_column_is_told_the_close_name(tmp_path):
    message = _load_error(
        tmp_path,
        _workflow_text(
            _stage(
                "a",
                "\n    num_records: 2",
                config="\n      columns:\n        - {name: stock, column_type: sampler, sampler_type: uuid,"
                " params: {}}\n",
            ),
            _stage(
                "b",
                "\n    depends_on: [a]",
                config="\n      columns:\n        - {name: x, column_type: expression, expr: '{{ stok }}'}\n",
            ),
        ),
    )
    assert "stage 'b', field 'config': column 'x' reads 'stok'" in message
    assert "(did you mean 'stock'?)" in message and "available: stock)" in message


def test_template_reading_a_column_dropped_upstream(tmp_path):
    message = _load_error(
        tmp_path,
        _workflow_text(
            _stage(
                "a",
                "\n    output_processors:\n      - {processor_type: drop_columns, name: d, column_names: [color]}",
            ),
            _stage(
                "b",
                "\n    depends_on: [a]",
                config="\n      columns:\n        - {name: x, column_type: expression, expr: '{{ color }}'}\n",
            ),
        ),
    )
    assert "column 'x' reads 'color'" in message


def test_output_processor_that_does_not_exist(tmp_path):
    message = _load_error(tmp_path, _workflow_text(_stage("a", "\n    output: processor:x")))
    assert "stage 'a', field 'output': no processor named 'x'" in message


def test_several_upstreams_without_combine(tmp_path):
    message = _load_error(tmp_path, _workflow_text(_stage("a"), _stage("b"), _stage("c", "\n    depends_on: [a, b]")))
    assert "stage 'c', field 'combine'" in message


def test_zip_upstreams_with_overlapping_generated_columns(tmp_path):
    expr = "\n      columns:\n        - {name: label, column_type: expression, expr: '{{ n }}'}\n"
    message = _load_error(
        tmp_path,
        _workflow_text(
            _stage("a"),
            _stage("b", "\n    depends_on: [a]", config=expr),
            _stage("c", "\n    depends_on: [a]", config=expr),
            _stage("d", "\n    depends_on: [b, c]\n    combine: zip"),
        ),
    )
    assert "stage 'd', field 'combine': zip upstreams 'b' and 'c' both have column(s) 'label'" in message


def test_two_stages_defining_one_alias_differently(tmp_path):
    def llm(model: str) -> str:
        return (
            "\n      model_configs:\n        - {alias: m, model: "
            + model
            + ", provider: p}\n      columns:\n        - {name: t, column_type: llm-text, model_alias: m, prompt: hi}\n"
        )

    message = _load_error(tmp_path, _workflow_text(_stage("a", config=llm("one")), _stage("b", config=llm("two"))))
    assert "stage 'b', field 'config.model_configs': model alias 'm' is defined differently" in message


@pytest.mark.parametrize("bad", ["0", "-1", "2.5", "'ten'"])
def test_num_records_not_a_positive_integer(tmp_path, bad):
    message = _load_error(tmp_path, _workflow_text(_stage("a", f"\n    num_records: {bad}")))
    assert "stage 'a', field 'num_records'" in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("on_success", "no_such_module_xyz:f", "does not import: ModuleNotFoundError"),
        ("on_success", "dd_assets_tests.fixtures.callables:missing", "has no attribute 'missing'"),
        ("on_success", "dd_assets_tests.fixtures.callables:NOT_CALLABLE", "is not callable"),
        ("on_success", "no_colon", "must be 'module:function'"),
        ("combine", "no_such_module_xyz:f", "does not import"),
    ],
)
def test_import_paths_that_do_not_import(tmp_path, field, value, expected):
    depends = "\n    depends_on: [a, b]" if field == "combine" else ""
    message = _load_error(
        tmp_path, _workflow_text(_stage("a"), _stage("b"), _stage("c", f"{depends}\n    {field}: {value}"))
    )
    assert f"stage 'c', field '{field}'" in message and expected in message


def test_duplicate_workflow_name_across_files(tmp_path):
    _write(tmp_path, _workflow_text(_stage("a")), "one.yaml")
    second = _write(tmp_path, _workflow_text(_stage("b")), "two.yaml")
    with pytest.raises(WorkflowDefinitionError) as info:
        load_workflow_dir(tmp_path)
    assert str(info.value).startswith(f"{second}: workflow 'wf', field 'name': workflow name already used by")


def test_duplicate_workflow_name_between_yaml_and_python(tmp_path):
    wf = Workflow(name="quickstart", stages=[__import__("dd_assets").Stage(name="a", config=sampler_builder())])
    with pytest.raises(WorkflowDefinitionError, match="workflow 'quickstart', field 'name': two workflows"):
        build_workflow_definitions([quickstart_workflow(), wf])


def test_token_budget_and_stall_timeout_keys(tmp_path):
    wf = Workflow.from_yaml(
        _write(tmp_path, _workflow_text(_stage("a", "\n    token_budget: 5000\n    stall_timeout_s: 45")))
    )
    assert wf.stage("a").token_budget == 5000 and wf.stage("a").stall_timeout_s == 45
    message = _load_error(tmp_path, _workflow_text(_stage("a", "\n    token_budget: 0")))
    assert "workflow 'wf', stage 'a', field 'token_budget'" in message


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ("{start: 4, end: 1}", "'start' index must be less than or equal to 'end' index (got start 4, end 1)"),
        ("{index: 5, num_partitions: 2}", "'index' must be less than 'num_partitions' (got index 5, num_partitions 2)"),
    ],
)
def test_an_impossible_selection_strategy_names_file_workflow_stage_and_field(tmp_path, selection, expected):
    message = _load_error(
        tmp_path,
        _workflow_text(_stage("a"), _stage("b", f"\n    depends_on: [a]\n    selection_strategy: {selection}")),
    )
    assert f"workflow 'wf', stage 'b', field 'selection_strategy': {expected}" in message
    assert "validation error" not in message and "pydantic" not in message
