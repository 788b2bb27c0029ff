"""The YAML format: same assets as Python, the shipped JSON Schema, and every load-time error."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
import yaml

from dd_assets import DataDesignerStageTranslator, Workflow, WorkflowDefinitionError, build_workflow_definitions
from dd_assets.examples.doc_qa import doc_qa_workflow
from dd_assets.examples.quickstart import quickstart_workflow
from dd_assets.spec.yaml_loader import SCHEMA_FILE, load_workflow_dir, workflow_json_schema
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


# --- one schema: every Stage field is a YAML key (and so a key of the Component's workflow) ------------------------

CATEGORY = {
    "columns": [{"name": "k", "column_type": "sampler", "sampler_type": "category", "params": {"values": ["p"]}}]
}

# a Data Designer template: the Component must hand it to Data Designer as written (Dagster renders attribute strings)
TEMPLATED = {"columns": [*CATEGORY["columns"], {"name": "e", "column_type": "expression", "expr": "{{ k }}!"}]}

# A non-default YAML value for every Stage field, the stage it is set on, and what the Stage must hold. A new Stage
# field fails test_every_stage_field_has_a_sample until it gets a line here (and so a YAML key: see its spec_field).
FIELD_SAMPLES = {
    "name": ("full", "full", lambda v: v == "full"),
    "config": ("full", TEMPLATED, lambda v: v == TEMPLATED),
    "depends_on": ("full", ["a", "b", "raw/docs"], lambda v: v == ("a", "b", dg.AssetKey(["raw", "docs"]))),
    "num_records": ("full", 7, lambda v: v == 7),
    "output_processors": (
        "full",
        [{"processor_type": "drop_columns", "name": "d", "column_names": ["k"]}],
        lambda v: [p.name for p in v] == ["d"],
    ),
    "output": ("full", "processor:d", lambda v: v == "processor:d"),
    "on_success": (
        "full",
        "dd_assets_tests.fixtures.callables:final_output",
        lambda v: v.__name__ == "final_output",
    ),
    "on_success_version": ("full", "2", lambda v: v == "2"),
    "allow_empty": ("full", True, lambda v: v is True),
    "sampling_strategy": ("full", "shuffle", lambda v: v.value == "shuffle"),
    "selection_strategy": ("full", {"index": 1, "num_partitions": 2}, lambda v: (v.index, v.num_partitions) == (1, 2)),
    "combine": ("full", "concat", lambda v: v == "concat"),
    "description": ("full", "every field", lambda v: v == "every field"),
    "completion_threshold": ("full", 0.5, lambda v: v == 0.5),
    "min_judge_score": ("full", 3.5, lambda v: v == 3.5),
    "partitions": ("parted", 4, lambda v: v == 4),
    "token_budget": ("full", 5000, lambda v: v == 5000),
    "stall_timeout_s": ("full", 45, lambda v: v == 45),
    "automation_condition": ("full", "eager", lambda v: isinstance(v, dg.AutomationCondition)),
    "owners": ("full", ["team:data"], lambda v: list(v) == ["team:data"]),
    "tags": ("full", {"tier": "gold"}, lambda v: dict(v) == {"tier": "gold"}),
}


def _stage_fields() -> list[str]:
    import dataclasses

    from dd_assets import Stage

    return [f.name for f in dataclasses.fields(Stage) if f.init]


def _every_field_workflow() -> dict:
    stages = {name: {"name": name, "config": CATEGORY} for name in ("a", "b", "full", "parted")}
    from dd_assets import Stage
    from dd_assets.spec.field_specs import field_specs

    for field, (stage, value, _) in FIELD_SAMPLES.items():
        stages[stage][field_specs(Stage)[field].key or field] = value
    return {"name": "every_field", "stages": list(stages.values())}


def _assert_every_field_reached_the_stage(wf: Workflow) -> None:
    for field, (stage, value, holds) in FIELD_SAMPLES.items():
        assert holds(getattr(wf.stage(stage), field)), (field, value, getattr(wf.stage(stage), field))


def test_every_stage_field_has_a_sample():
    assert sorted(FIELD_SAMPLES) == sorted(_stage_fields()), "give every Stage field a YAML sample in FIELD_SAMPLES"


def test_every_stage_field_is_accepted_by_yaml(tmp_path):
    path = tmp_path / "every.yaml"
    path.write_text(yaml.safe_dump(_every_field_workflow(), sort_keys=False))
    _assert_every_field_reached_the_stage(Workflow.from_yaml(path))


def test_every_stage_field_is_accepted_by_the_component(tmp_path):
    from dagster.components.testing import create_defs_folder_sandbox

    from dd_assets import DataDesignerWorkflowComponent

    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "every"
        folder.mkdir()
        attributes = {"workflow": _every_field_workflow(), "base_dir": str(tmp_path / "data")}
        (folder / "defs.yaml").write_text(
            yaml.safe_dump({"type": "dd_assets.DataDesignerWorkflowComponent", "attributes": attributes})
        )
        with sandbox.build_component_tree() as tree:  # Dagster's own loading of defs.yaml (its templating too)
            component = tree.load_component(folder)
            assert isinstance(component, DataDesignerWorkflowComponent)
            _assert_every_field_reached_the_stage(component.load_workflow(folder))
    # the attributes schema dg gives editors of defs.yaml carries the YAML format's stage keys
    attribute = DataDesignerWorkflowComponent.get_model_cls().model_json_schema()["properties"]["workflow"]
    from dd_assets import Stage
    from dd_assets.spec.field_specs import field_specs

    keys = sorted(field_specs(Stage)[name].key or name for name in FIELD_SAMPLES)
    assert sorted(attribute["properties"]["stages"]["items"]["properties"]) == keys


def test_every_stage_field_is_in_the_shipped_schema_and_in_docs_yaml_md():
    from dd_assets import Stage
    from dd_assets.spec.field_specs import field_specs

    properties = json.loads(SCHEMA_FILE.read_text())["$defs"]["StageModel"]["properties"]
    keys = [field_specs(Stage)[name].key or name for name in _stage_fields()]
    assert sorted(properties) == sorted(keys)
    docs = (Path(__file__).resolve().parents[1] / "docs" / "yaml.md").read_text()
    table = docs.split("## Stage keys", 1)[1].split("\n\n", 2)[1]
    assert sorted(line.split("`")[1] for line in table.splitlines() if line.startswith("| `")) == sorted(keys)


def test_a_yaml_table_that_misses_a_stage_field_is_refused_at_import():
    from dd_assets import Stage
    from dd_assets.spec.field_specs import field_specs
    from dd_assets.spec.yaml_reading import model_from_fields

    table = {name: entry for name, entry in field_specs(Stage).items() if name != "min_judge_score"}
    with pytest.raises(TypeError, match=r"must name every field of Stage \(missing \['min_judge_score'\]"):
        model_from_fields("StageModel", Stage, table, "")


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("num_records", 0),
        ("partitions", 1),
        ("partitions", 10_001),
        ("completion_threshold", 0),
        ("completion_threshold", 1.5),
        ("token_budget", 0),
        ("stall_timeout_s", 0),
    ],
)
def test_a_value_out_of_range_is_refused_alike_by_python_yaml_and_the_schema(tmp_path, field, bad):
    from dd_assets import Stage

    with pytest.raises(WorkflowDefinitionError) as python:
        Workflow(name="wf", stages=[Stage(name="a", config=sampler_builder(), **{field: bad})])
    from_yaml = _load_error(tmp_path, _workflow_text(_stage("a", f"\n    {field}: {bad}")))
    assert from_yaml.endswith(str(python.value)), (from_yaml, str(python.value))
    schema = workflow_json_schema()["$defs"]["StageModel"]["properties"][field]
    number = next((b for b in schema.get("anyOf", []) if "type" in b and b["type"] != "null"), schema)
    inside = number.get("minimum", -math.inf) <= bad <= number.get("maximum", math.inf) and bad > number.get(
        "exclusiveMinimum", -math.inf
    )
    assert not inside, number


# --- judge scores keep their types: Data Designer's dict/file config load turns option keys into strings -----------


def _judge_column(options: dict) -> dict:
    return {
        "name": "grade",
        "column_type": "llm-judge",
        "model_alias": "test-model",
        "prompt": "Grade {{ color }}",
        "scores": [{"name": "quality", "description": "how good", "options": options}],
    }


def test_judge_scores_keep_their_int_type_on_the_yaml_path(tmp_path, io_manager, instance, llm_resource, llm):
    import data_designer.config as dd

    from dd_assets import Stage
    from dd_assets_tests.helpers import model_config

    llm.structured_answer = {"quality": {"reasoning": "fine", "score": 4}}
    options = {4: "great", 3: "good", 2: "fair", 1: "poor", 0: "bad"}
    python_judge = dd.DataDesignerConfigBuilder(model_configs=[model_config()])
    python_judge.add_column(
        dd.LLMJudgeColumnConfig(
            name="grade",
            model_alias="test-model",
            prompt="Grade {{ color }}",
            scores=[dd.Score(name="quality", description="how good", options=options)],
        )
    )
    python = Workflow(
        name="judge_py",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=3),
            Stage(name="grade", config=python_judge, depends_on=["seed"]),
        ],
    )
    judge = {"model_configs": [model_config().model_dump(mode="json")], "columns": [_judge_column(options)]}
    (tmp_path / "judge.yaml").write_text(yaml.safe_dump(judge))  # a config file with int keys, as a user writes it
    path = _write(
        tmp_path,
        _workflow_text(
            _stage("seed", "\n    num_records: 3"),
            "  - {name: from_file, config: judge.yaml, depends_on: [seed]}",
            "  - name: inline\n    depends_on: [seed]\n    config: "
            + yaml.safe_dump(judge, default_flow_style=True, width=10**6),
            name="judge_yaml",
        ),
    )
    from_yaml = Workflow.from_yaml(path)
    assert from_yaml.stage("inline").builder.get_column_config("grade").scores[0].options == options
    materialize([python, from_yaml], io_manager, instance, resource=llm_resource)

    def published(workflow: str, stage: str):
        return io_manager.read_stage(workflow, stage).schema.field("grade").type

    expected = published("judge_py", "grade")
    assert expected.field("quality").type.field("score").type == pa.int64(), expected
    assert published("judge_yaml", "from_file") == expected
    assert published("judge_yaml", "inline") == expected
    assert io_manager.read_stage("judge_yaml", "inline").to_pandas()["grade"][0]["quality"]["score"] == 4


def test_an_expression_column_is_text_unless_it_says_dtype_as_docs_yaml_md_says(tmp_path, io_manager, instance):
    config = (
        "\n      columns:\n        - {name: n, column_type: sampler, sampler_type: uniform, params: {low: 0, high: 9},"
        " convert_to: int}\n        - {name: big, column_type: expression, expr: '{{ n > 4 }}'}"
        "\n        - {name: big_bool, column_type: expression, expr: '{{ n > 4 }}', dtype: bool}\n"
    )
    wf = Workflow.from_yaml(_write(tmp_path, _workflow_text(_stage("a", "\n    num_records: 6", config=config))))
    materialize(wf, io_manager, instance)
    frame = io_manager.read_stage("wf", "a").to_pandas()
    assert set(frame["big"]) <= {"True", "False"} and frame["big_bool"].dtype == bool
    assert list(frame["big"]) == [str(v) for v in frame["big_bool"]]
    docs = (Path(__file__).resolve().parents[1] / "docs" / "yaml.md").read_text()
    assert "### Expression columns are strings unless they say `dtype`" in docs


def test_a_relative_seed_path_in_an_inline_config_resolves_against_the_workflow_file(tmp_path, monkeypatch):
    import pandas as pd

    folder = tmp_path / "project"
    (folder / "seeds").mkdir(parents=True)
    pd.DataFrame({"text": ["a"]}).to_parquet(folder / "seeds" / "s.parquet")
    config = (
        "\n      seed_config: {source: {seed_type: local, path: seeds/s.parquet}}"
        "\n      columns:\n        - {name: upper, column_type: expression, expr: '{{ text | upper }}'}\n"
    )
    monkeypatch.chdir(tmp_path)  # not the workflow's folder
    wf = Workflow.from_yaml(_write(folder, _workflow_text(_stage("up", config=config))))
    assert wf.stage("up").builder.get_seed_config().source.path == str(folder / "seeds" / "s.parquet")
