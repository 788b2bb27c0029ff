"""Automation, jobs, owners and tags (issue 16, point 8), evaluated by Dagster itself on a real instance."""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest
from dagster.components.testing import create_defs_folder_sandbox

from dd_assets import Stage, Workflow, WorkflowDefinitionError, build_workflow_definitions
from dd_assets.assets.translator import DataDesignerStageTranslator
from dd_assets.spec.yaml_loader import workflow_from_mapping
from dd_assets_tests.helpers import expression_builder, materialize, sampler_builder

RECIPES = Path(__file__).parent.parent / "docs" / "recipes.md"
SAMPLER = {
    "columns": [{"name": "n", "column_type": "sampler", "sampler_type": "category", "params": {"values": ["x"]}}]
}
EXPRESSION = {"columns": [{"name": "m", "column_type": "expression", "expr": "{{ n }}!"}]}


def _chain(name: str, **derived_fields) -> Workflow:
    return Workflow(
        name=name,
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=4),
            Stage(
                name="derived", config=expression_builder("m", "{{ color }}!"), depends_on=["seed"], **derived_fields
            ),
        ],
    )


def _own_tags(spec: dg.AssetSpec) -> dict[str, str]:
    return {k: v for k, v in spec.tags.items() if not k.startswith("dagster/kind/")}


def _spec(defs: dg.Definitions, key: list[str]) -> dg.AssetSpec:
    return defs.resolve_assets_def(dg.AssetKey(key)).specs_by_key[dg.AssetKey(key)]


@pytest.mark.parametrize("execution", ["per_stage", "concurrent"])
def test_an_eager_stage_is_requested_again_whenever_its_upstream_changes(execution, io_manager, instance):
    workflow = _chain("auto", automation_condition=dg.AutomationCondition.eager())
    defs = build_workflow_definitions(workflow, io_manager=io_manager, execution=execution)
    derived = dg.AssetKey(["auto", "derived"])
    assert _spec(defs, ["auto", "derived"]).automation_condition == dg.AutomationCondition.eager()
    assert _spec(defs, ["auto", "seed"]).automation_condition is None
    sensor = defs.resolve_sensor_def("default_automation_condition_sensor")  # listed under Automation in the UI
    assert derived in sensor.asset_selection.resolve(defs.resolve_asset_graph())

    def tick(cursor=None):
        selection = dg.AssetSelection.all() | dg.AssetSelection.all_asset_checks()  # Dagster's default warns (beta)
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection, cursor=cursor)

    result = tick()
    assert result.total_requested == 0  # its upstream is missing
    for round_ in range(2):
        materialize(workflow, io_manager, instance, selection=["auto/seed"], execution=execution)
        result = tick(result.cursor)
        assert result.get_num_requested(derived) == 1 and result.total_requested == 1, round_
        # run what Dagster requested, as the daemon would
        materialize(workflow, io_manager, instance, selection=[derived], execution=execution)
        result = tick(result.cursor)
        assert result.total_requested == 0, round_
    assert io_manager.read_stage("auto", "derived").num_rows == 4


def test_automation_owners_and_tags_leave_the_code_version_alone():
    plain = _chain("cv")
    decorated = Workflow(
        name="cv",
        owners=["team:data"],
        tags={"domain": "support"},
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=4, owners=["ana@example.com"]),
            Stage(
                name="derived",
                config=expression_builder("m", "{{ color }}!"),
                depends_on=["seed"],
                automation_condition=dg.AutomationCondition.eager(),
                tags={"tier": "gold"},
            ),
        ],
    )
    translator = DataDesignerStageTranslator()
    for stage in ("seed", "derived"):
        assert translator.get_code_version(plain, plain.stage(stage)) == translator.get_code_version(
            decorated, decorated.stage(stage)
        )


def test_owners_and_tags_reach_the_asset_specs_from_python_and_yaml():
    python = Workflow(
        name="own",
        owners=["team:data"],
        tags={"domain": "support", "tier": "silver"},
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=2),
            Stage(
                name="derived",
                config=expression_builder("m", "{{ color }}"),
                depends_on=["seed"],
                owners=["ana@example.com", "team:data"],
                tags={"tier": "gold"},
            ),
        ],
    )
    yaml = workflow_from_mapping(
        {
            "name": "own",
            "owners": ["team:data"],
            "tags": {"domain": "support", "tier": "silver"},
            "stages": [
                {"name": "seed", "num_records": 2, "config": SAMPLER},
                {
                    "name": "derived",
                    "depends_on": ["seed"],
                    "config": EXPRESSION,
                    "owners": ["ana@example.com"],
                    "tags": {"tier": "gold"},
                },
            ],
        },
        base_dir=Path("."),
    )
    for workflow in (python, yaml):
        defs = build_workflow_definitions(workflow)
        seed, derived = _spec(defs, ["own", "seed"]), _spec(defs, ["own", "derived"])
        assert seed.owners == ["team:data"] and derived.owners == ["team:data", "ana@example.com"]
        assert _own_tags(seed) == {"domain": "support", "tier": "silver"}
        assert _own_tags(derived) == {"domain": "support", "tier": "gold"}
        assert derived.kinds == {"data_designer", "parquet"}  # kinds are kept beside the tags


def test_yaml_automation_forms_are_dagster_conditions():
    def condition(value):
        workflow = workflow_from_mapping(
            {"name": "y", "stages": [{"name": "s", "num_records": 2, "config": SAMPLER, "automation": value}]},
            base_dir=Path("."),
        )
        return _spec(build_workflow_definitions(workflow), ["y", "s"]).automation_condition

    assert condition("eager") == dg.AutomationCondition.eager()
    assert condition("on_missing") == dg.AutomationCondition.on_missing()
    assert condition({"on_cron": "0 6 * * *"}) == dg.AutomationCondition.on_cron("0 6 * * *")
    assert condition(None) is None


def test_a_workflow_default_automation_applies_to_stages_without_their_own():
    workflow = workflow_from_mapping(
        {
            "name": "wd",
            "automation": "eager",
            "stages": [
                {"name": "seed", "num_records": 2, "config": SAMPLER, "automation": "on_missing"},
                {"name": "derived", "depends_on": ["seed"], "config": EXPRESSION},
            ],
        },
        base_dir=Path("."),
    )
    defs = build_workflow_definitions(workflow)
    assert _spec(defs, ["wd", "seed"]).automation_condition == dg.AutomationCondition.on_missing()
    assert _spec(defs, ["wd", "derived"]).automation_condition == dg.AutomationCondition.eager()


@pytest.mark.parametrize(
    ("where", "value", "field", "fragment"),
    [
        ("stage", {"automation": "sometimes"}, "automation", "'eager' or 'on_missing'"),
        ("stage", {"automation": {"on_cron": "every day"}}, "automation", "not a valid cron schedule"),
        ("stage", {"automation": {"on_crn": "0 6 * * *"}}, "automation", "on_crn"),
        ("stage", {"owners": ["bob"]}, "owners", "Invalid owner 'bob'"),
        ("stage", {"tags": {"a b": "c"}}, "tags", "invalid tag keys"),
        ("workflow", {"automation": {"on_cron": "61 * * * *"}}, "automation", "not a valid cron schedule"),
        ("workflow", {"owners": ["nobody"]}, "owners", "Invalid owner 'nobody'"),
    ],
)
def test_yaml_automation_owner_and_tag_mistakes_name_file_workflow_stage_and_field(where, value, field, fragment):
    stage = {"name": "s", "num_records": 2, "config": SAMPLER, **(value if where == "stage" else {})}
    data = {"name": "bad", "stages": [stage], **(value if where == "workflow" else {})}
    with pytest.raises(WorkflowDefinitionError) as caught:
        workflow_from_mapping(data, base_dir=Path("."), file="bad.yaml")
    message = str(caught.value)
    assert message.startswith("bad.yaml: workflow 'bad'"), message
    assert (caught.value.stage == "s") == (where == "stage"), message
    assert caught.value.field == field and fragment in message, message


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"automation_condition": "eager"}, "automation_condition"),
        ({"owners": "team:data"}, "owners"),
        ({"owners": ["bob"]}, "owners"),
        ({"tags": {"tier": 1}}, "tags"),
    ],
)
def test_python_automation_owner_and_tag_mistakes_name_the_stage_and_field(fields, field):
    with pytest.raises(WorkflowDefinitionError) as caught:
        Workflow(name="bad", stages=[Stage(name="s", config=sampler_builder(), **fields)])
    assert (caught.value.workflow, caught.value.stage, caught.value.field) == ("bad", "s", field)


@pytest.mark.parametrize("execution", ["per_stage", "concurrent"])
def test_each_workflow_gets_a_job_of_its_own_stages_and_checks(execution, io_manager, instance):
    first, second = _chain("first"), _chain("second")
    defs = build_workflow_definitions(first, second, io_manager=io_manager, execution=execution)
    job = defs.resolve_job_def("first_job")
    assert job.asset_layer.executable_asset_keys == {dg.AssetKey(["first", "seed"]), dg.AssetKey(["first", "derived"])}
    assert defs.resolve_job_def("second_job").asset_layer.executable_asset_keys == {
        dg.AssetKey(["second", "seed"]),
        dg.AssetKey(["second", "derived"]),
    }
    result = job.execute_in_process(instance=instance)
    assert result.success
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == {dg.AssetKey(["first", "seed"]), dg.AssetKey(["first", "derived"])}
    checked = {e.asset_key for e in result.get_asset_check_evaluations()}
    assert checked == materialized  # the stages' checks run in the job too
    assert io_manager.read_stage("first", "derived").num_rows == 4


def test_a_workflow_partitioned_in_two_ways_loads_without_a_job():
    workflow = Workflow(
        name="two_ways",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=8, partitions=2),
            Stage(name="derived", config=expression_builder("m", "{{ color }}"), depends_on=["seed"], partitions=4),
        ],
    )
    alike = _chain("alike", partitions=None)
    defs = build_workflow_definitions(workflow, alike)
    dg.Definitions.validate_loadable(defs)
    assert {job.name for job in defs.resolve_all_job_defs()} >= {"alike_job"}
    assert "two_ways_job" not in {job.name for job in defs.resolve_all_job_defs()}


def test_the_component_sets_automation_owners_and_tags_and_builds_the_job(monkeypatch):
    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "comp"
        folder.mkdir()
        (folder / "workflow.yaml").write_text(
            "name: comp\n"
            "owners: ['team:data']\n"
            "tags: {tier: gold}\n"
            "stages:\n"
            "  - {name: seed, num_records: 2, automation: on_missing, config: {columns: [{name: n,"
            " column_type: sampler, sampler_type: category, params: {values: [x]}}]}}\n"
            "  - {name: derived, depends_on: [seed], config: {columns: [{name: m, column_type: expression,"
            " expr: '{{ n }}!'}]}}\n"
        )
        (folder / "defs.yaml").write_text(
            "type: dd_assets.DataDesignerWorkflowComponent\n"
            "attributes:\n"
            "  workflow_file: workflow.yaml\n"
            "  automation: {on_cron: '0 6 * * *'}\n"
            "  owners: ['ana@example.com']\n"
            "  tags: {tier: bronze, source: component}\n"
        )
        with sandbox.build_all_defs() as defs:
            seed, derived = _spec(defs, ["comp", "seed"]), _spec(defs, ["comp", "derived"])
            assert seed.automation_condition == dg.AutomationCondition.on_missing()  # the stage's own wins
            assert derived.automation_condition == dg.AutomationCondition.on_cron("0 6 * * *")
            assert derived.owners == ["ana@example.com", "team:data"]
            assert _own_tags(derived) == {"tier": "gold", "source": "component"}  # the workflow's tag wins
            assert defs.resolve_job_def("comp_job").asset_layer.executable_asset_keys == {seed.key, derived.key}

        (folder / "defs.yaml").write_text(
            "type: dd_assets.DataDesignerWorkflowComponent\n"
            "attributes:\n"
            "  workflow_file: workflow.yaml\n"
            "  automation: {on_cron: 'whenever'}\n"
        )
        with sandbox.build_all_defs() as defs:  # the broken component shows as its load_errors asset
            (error,) = [key for key in defs.resolve_all_asset_keys() if key.path[0] == "load_errors"]
            description = defs.resolve_assets_def(error).specs_by_key[error].description
            assert "field 'automation'" in description and "not a valid cron" in description
        monkeypatch.setenv("DD_ASSETS_STRICT_LOAD", "1")  # as `dg check defs` loads: the error fails the location
        with pytest.raises(Exception) as caught:
            with sandbox.build_all_defs():
                pass
        message = str(caught.value) + str(getattr(caught.value, "__cause__", ""))
        assert "defs.yaml" in message and "field 'automation'" in message and "not a valid cron" in message


def _recipe(title: str) -> str:
    text = RECIPES.read_text(encoding="utf-8")
    section = text.split(f"## {title}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_a_folder_of_seed_documents_becomes_one_partition_per_file_through_a_sensor(tmp_path, monkeypatch, instance):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "seed_folder_recipe"}
    exec(compile(_recipe("Watch a folder of seed documents"), str(RECIPES), "exec", dont_inherit=True), namespace)  # noqa: S102
    defs, sensor = namespace["defs"], namespace["new_seed_documents"]
    folder = tmp_path / "seed_docs"
    folder.mkdir()
    (folder / "faq.txt").write_text("How do I reset my password?\n\nWhere is my invoice?\n")
    (folder / "notes.md").write_text("not a seed document\n")

    def tick() -> dg.SensorResult:
        result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        for request in result.dynamic_partitions_requests:  # what the daemon does with them
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result

    def run(request: dg.RunRequest) -> None:
        job = defs.resolve_job_def(sensor.job_name)
        assert job.execute_in_process(instance=instance, partition_key=request.partition_key).success

    first = tick()
    assert [r.partition_key for r in first.run_requests] == ["faq.txt"]
    assert instance.get_dynamic_partitions("seed_documents") == ["faq.txt"]
    run(first.run_requests[0])
    assert tick().run_requests == []  # nothing new

    (folder / "orders.txt").write_text("Can I change my order?\n")
    second = tick()
    assert [r.partition_key for r in second.run_requests] == ["orders.txt"]
    run(second.run_requests[0])

    from dd_assets import StageParquetIOManager

    stored = StageParquetIOManager(base_dir=str(tmp_path / "data"))
    new = stored.read_stage("doc_questions", "questions", "orders.txt").to_pandas()
    assert list(new["prompt"]) == ["Write a question about: Can I change my order?"]
    # the first document's partition read its own rows whole, so it stays current beside the new one
    rows = stored.read_stage("doc_questions", "questions").to_pandas()
    assert list(rows["document"]) == ["faq.txt", "faq.txt", "orders.txt"]
    assert list(rows["passage"])[:2] == ["How do I reset my password?", "Where is my invoice?"]
