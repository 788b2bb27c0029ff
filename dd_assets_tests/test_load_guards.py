"""Load-time guards: names, op-name collisions, record counts, duplicate YAML keys, MCP tool columns.

Each of these used to pass the load-time checks and fail later (unclearly, or not at all).
"""

from __future__ import annotations

import data_designer.config as dd
import pytest

from dd_assets import Stage, Workflow, WorkflowDefinitionError, build_workflow_definitions
from dd_assets.spec.field_rules import DEFAULT_MAX_NUM_RECORDS
from dd_assets.spec.names import MAX_NAME_LENGTH
from dd_assets_tests.helpers import expression_builder, materialize, sampler_builder
from dd_assets_tests.test_yaml import _load_error, _stage, _workflow_text


def _error(stages, name="wf", **workflow_fields) -> str:
    with pytest.raises(WorkflowDefinitionError) as info:
        Workflow(name=name, stages=stages, **workflow_fields)
    return str(info.value)


@pytest.mark.parametrize("bad", ["a\n", "a\r\n", "\na", "a\t"])
def test_names_with_trailing_or_leading_whitespace_are_rejected(bad):
    assert "stage name" in _error([Stage(name=bad, config=sampler_builder())]) and "field 'name'" in _error(
        [Stage(name=bad, config=sampler_builder())]
    )
    message = _error([Stage(name="a", config=sampler_builder())], name=bad)
    assert "workflow name" in message and "field 'name'" in message


def test_workflow_names_with_a_dash_are_rejected_because_dagster_groups_allow_none():
    message = _error([Stage(name="a", config=sampler_builder())], name="my-workflow")
    assert "workflow name 'my-workflow' is invalid: use letters, digits and '_' only" in message


def test_stage_names_may_hold_a_dash_and_materialize(io_manager, instance):
    wf = Workflow(name="dash", stages=[Stage(name="first-stage", config=sampler_builder(), num_records=3)])
    assert materialize(wf, io_manager, instance).success
    assert io_manager.read_stage("dash", "first-stage").num_rows == 3


def test_names_longer_than_the_cap_are_rejected():
    long = "s" * (MAX_NAME_LENGTH + 1)
    assert f"is {MAX_NAME_LENGTH + 1} characters long" in _error([Stage(name=long, config=sampler_builder())])
    assert "characters long" in _error([Stage(name="a", config=sampler_builder())], name=long)


def test_stages_that_share_an_op_name_are_named():
    message = _error([Stage(name="a-b", config=sampler_builder()), Stage(name="a_b", config=sampler_builder())])
    assert "stage 'a_b', field 'name'" in message
    assert "stages 'a-b' and 'a_b' both become the Dagster op 'wf__a_b'" in message


def test_stages_of_two_workflows_that_share_an_op_name_are_named():
    one = Workflow(name="a__b", stages=[Stage(name="c", config=sampler_builder())])
    two = Workflow(name="a", stages=[Stage(name="b__c", config=sampler_builder())])
    with pytest.raises(WorkflowDefinitionError) as info:
        build_workflow_definitions([one, two])
    message = str(info.value)
    assert "workflow 'a', stage 'b__c', field 'name'" in message
    assert "Dagster op 'a__b__c', like stage 'c' of workflow 'a__b'" in message


@pytest.mark.parametrize("bad", [True, False, 2.0, "5", 10**12])
def test_num_records_must_be_a_plain_integer_within_the_bound(bad):
    message = _error([Stage(name="a", config=sampler_builder(), num_records=bad)])
    assert "stage 'a', field 'num_records'" in message
    if bad == 10**12:
        assert f"above the workflow's max_num_records ({DEFAULT_MAX_NUM_RECORDS:,})" in message


def test_the_num_records_bound_is_configurable():
    wf = Workflow(
        name="big", stages=[Stage(name="a", config=sampler_builder(), num_records=10**8)], max_num_records=10**9
    )
    assert wf.stage("a").num_records == 10**8
    assert "above the workflow's max_num_records (50)" in _error(
        [Stage(name="a", config=sampler_builder(), num_records=51)], max_num_records=50
    )
    assert "field 'max_num_records'" in _error([Stage(name="a", config=sampler_builder())], max_num_records=True)


def test_run_config_num_records_is_held_to_the_bound(io_manager, instance):
    wf = Workflow(name="runbound", stages=[Stage(name="a", config=sampler_builder())], max_num_records=100)
    result = materialize(
        wf,
        io_manager,
        instance,
        run_config={"ops": {"runbound__a": {"config": {"num_records": 101}}}},
        raise_on_error=False,
    )
    assert not result.success
    message = result.failure_data_for_node("runbound__a").error.message
    assert "workflow 'runbound', stage 'a'" in message and "above the workflow's max_num_records (100)" in message
    assert io_manager.read_record("runbound", "a") is None


@pytest.mark.parametrize("bad", ["true", "1e12", "1000000000000"])
def test_yaml_num_records_is_strict(tmp_path, bad):
    message = _load_error(tmp_path, _workflow_text(_stage("a", f"\n    num_records: {bad}")))
    assert "stage 'a', field 'num_records'" in message


def test_yaml_max_num_records_raises_the_bound(tmp_path):
    from dd_assets_tests.test_yaml import _write

    path = _write(
        tmp_path, "max_num_records: 1000000000000\n" + _workflow_text(_stage("a", "\n    num_records: 20000000"))
    )
    assert Workflow.from_yaml(path).stage("a").num_records == 20_000_000


def test_yaml_name_with_a_newline_is_rejected(tmp_path):
    message = _load_error(tmp_path, _workflow_text(_stage('"a\\n"')))
    assert "field 'name'" in message and "'a\\n'" in message


def test_duplicate_yaml_keys_are_rejected_with_their_line(tmp_path):
    text = _workflow_text(_stage("a", "\n    num_records: 5\n    num_records: 50"))
    message = _load_error(tmp_path, text)
    assert "duplicate key 'num_records' (first given on line 9)" in message and "line 10" in message


def test_duplicate_keys_in_a_stage_config_file_are_rejected(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "columns:\n  - {name: n, column_type: sampler, sampler_type: uniform, params: {low: 0, high: 9}}\ncolumns: []\n"
    )
    message = _error([Stage(name="a", config=config)])
    assert "stage 'a', field 'config'" in message and "duplicate key 'columns'" in message


def test_mcp_tool_columns_are_rejected_when_definitions_load():
    builder = dd.DataDesignerConfigBuilder(
        model_configs=[dd.ModelConfig(alias="m", model="m", provider="p")],
        tool_configs=[dd.ToolConfig(tool_alias="search", providers=["mcp"])],
    )
    builder.add_column(dd.LLMTextColumnConfig(name="answer", model_alias="m", prompt="Hi", tool_alias="search"))
    message = _error([Stage(name="tools", config=builder)])
    assert "stage 'tools', field 'config'" in message
    assert "column 'answer' (tool_alias 'search') use MCP tool calling, which dd_assets does not support" in message


def test_an_expression_stage_is_not_mistaken_for_a_tool_stage():
    assert Workflow(name="ok", stages=[Stage(name="a", config=expression_builder("x", "1"), num_records=1)])


def test_yaml_merge_keys_and_their_overrides_still_load(tmp_path):
    from dd_assets.spec import strict_yaml

    text = "defaults: &b {<<: {x: 1}, x: 2}\nother: {<<: *b, y: 3}\n"
    assert strict_yaml.safe_load(text) == {"defaults": {"x": 2}, "other": {"x": 2, "y": 3}}
    with pytest.raises(Exception, match="duplicate key 'x'"):
        strict_yaml.safe_load("a: {x: 1, x: 2}\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a mapping's own keys override merged ones, whichever side of the merge key they are written on
        ("a: &a {x: 1}\nb: {x: 2, <<: *a}\n", {"x": 2}),
        ("a: &a {x: 1}\nb: {<<: *a, x: 2}\n", {"x": 2}),
        # in a list of merged mappings, an earlier one overrides a later one
        ("a: &a {x: 1, y: 1}\nc: &c {x: 3, z: 3}\nb: {<<: [*a, *c]}\n", {"x": 1, "y": 1, "z": 3}),
        # a merged mapping is taken with its own merges and overrides applied, however deep
        ("a: &a {x: 1, y: 1}\nm: &m {<<: *a, x: 2}\nb: {<<: *m, z: 3}\n", {"x": 2, "y": 1, "z": 3}),
        ("a: &a {x: 1}\nm: &m {<<: *a, x: 2}\nn: &n {<<: *m, x: 3}\nb: {<<: *n}\n", {"x": 3}),
    ],
)
def test_yaml_merge_keys_follow_the_merge_key_rule_not_the_pyyaml_release(text, expected):
    from dd_assets.spec import strict_yaml

    assert strict_yaml.safe_load(text)["b"] == expected


def test_yaml_merge_key_of_a_scalar_is_a_clear_yaml_error():
    import yaml

    from dd_assets.spec import strict_yaml

    with pytest.raises(yaml.YAMLError, match="a merge key takes a mapping or a list of mappings"):
        strict_yaml.safe_load("b: {<<: 3}\n")


# --- unknown fields: a typo is refused with a did-you-mean, never replaced by a default ---------------------


def test_an_unknown_stage_or_workflow_field_is_named_with_a_did_you_mean():
    with pytest.raises(WorkflowDefinitionError) as info:
        Stage(name="a", config=sampler_builder(), num_record=3)
    assert "stage 'a', field 'num_record': unknown Stage field 'num_record' (did you mean 'num_records'?)" in str(
        info.value
    )
    with pytest.raises(WorkflowDefinitionError) as info:
        Workflow(name="wf", stages=[Stage(name="a", config=sampler_builder())], max_num_record=5)
    assert "workflow 'wf', field 'max_num_record': unknown Workflow field 'max_num_record'" in str(info.value)
    assert "(did you mean 'max_num_records'?)" in str(info.value)
    with pytest.raises(WorkflowDefinitionError, match=r"stage 'a': Stage\(\): missing a required argument: 'config'"):
        Stage(name="a")


def test_an_unknown_resource_or_io_manager_field_is_refused_with_a_did_you_mean(tmp_path):
    import dagster as dg

    from dd_assets import DataDesignerResource, StageParquetIOManager

    with pytest.raises(ValueError) as info:
        StageParquetIOManager(base_dri=str(tmp_path / "x"))
    assert "unknown StageParquetIOManager field 'base_dri' (did you mean 'base_dir'?)" in str(info.value)
    with pytest.raises(ValueError) as info:
        DataDesignerResource(stall_timout_s=3)
    assert "unknown DataDesignerResource field 'stall_timout_s' (did you mean 'stall_timeout_s'?)" in str(info.value)
    with pytest.raises(ValueError, match="unknown DataDesignerResource field 'admision'"):
        DataDesignerResource(admision="x")
    with pytest.raises(ValueError, match="unknown StageParquetIOManager field 'lock_timeout'"):
        StageParquetIOManager.configure_at_launch(lock_timeout=3)
    # Dagster's own ways of building them still work: EnvVar, configure_at_launch with the base_dir in run config
    assert StageParquetIOManager(base_dir=dg.EnvVar("DD_ASSETS_SOME_DIR")).base_dir is not None
    wf = Workflow(name="launch", stages=[Stage(name="a", config=sampler_builder(), num_records=2)])
    built = StageParquetIOManager(base_dir=str(tmp_path / "launch"))
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(
            wf,
            built,
            instance,
            extra_resources={
                "dd_stage_io_manager": StageParquetIOManager.configure_at_launch(),
                "data_designer": DataDesignerResource.configure_at_launch(),
            },
            run_config={
                "resources": {
                    "dd_stage_io_manager": {"config": {"base_dir": str(tmp_path / "launch")}},
                    "data_designer": {"config": {"progress_every_s": 0}},
                }
            },
        )
    assert result.success and built.read_stage("launch", "a").num_rows == 2
