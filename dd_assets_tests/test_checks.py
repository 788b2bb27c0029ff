"""Asset checks on every stage: declared as check_specs, evaluated on each materialization."""

from __future__ import annotations

import dagster as dg
import data_designer.config as dd

from dd_assets import DataDesignerResource, Stage, Workflow, build_workflow_definitions
from dd_assets_tests.conftest import TEST_PROVIDER
from dd_assets_tests.helpers import expression_builder, llm_builder, materialize, model_config, sampler_builder


def _checks(result: dg.ExecuteInProcessResult, key: list[str]) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey(key)}


def test_every_stage_declares_its_checks():
    wf = Workflow(
        name="chk",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=3),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"], allow_empty=True),
        ],
    )
    defs = build_workflow_definitions(wf)
    specs = {(s.asset_key.path[1], s.name): s for a in defs.assets for s in a.check_specs}
    assert set(specs) == {
        ("a", "non_empty"),
        ("a", "completion_rate"),
        ("a", "columns_present"),
        ("b", "completion_rate"),
        ("b", "columns_present"),
    }
    assert specs[("a", "non_empty")].blocking and specs[("a", "completion_rate")].blocking
    assert not specs[("a", "columns_present")].blocking


def test_checks_pass_on_a_good_run(io_manager, instance):
    wf = Workflow(
        name="good",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=5),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"]),
        ],
    )
    result = materialize(wf, io_manager, instance)
    assert _checks(result, ["good", "b"]) == {"non_empty": True, "completion_rate": True, "columns_present": True}


def _flaky_resource(llm) -> DataDesignerResource:
    return DataDesignerResource(
        model_providers=[{"name": TEST_PROVIDER, "endpoint": llm.endpoint, "api_key": "k"}],
        run_config={"disable_early_shutdown": True, "max_conversation_restarts": 0},
    )


def test_low_completion_rate_fails_and_blocks_downstream(io_manager, instance, llm):
    llm.fault = lambda prompt: (400, {"error": {"message": "bad request"}}) if "blue" in prompt else None
    builder = sampler_builder()
    wf = Workflow(
        name="flaky",
        stages=[
            Stage(name="seed", config=builder, num_records=20),
            Stage(name="write", config=llm_builder("text", "Write about {{ color }} {{ n }}"), depends_on=["seed"]),
            Stage(name="after", config=expression_builder("y", "{{ text }}"), depends_on=["write"]),
        ],
    )
    result = materialize(wf, io_manager, instance, resource=_flaky_resource(llm), raise_on_error=False)
    checks = _checks(result, ["flaky", "write"])
    assert checks["completion_rate"] is False
    evaluation = next(
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "completion_rate" and e.asset_key == dg.AssetKey(["flaky", "write"])
    )
    assert evaluation.metadata["rate"].value < 0.95
    assert io_manager.read_record("flaky", "after") is None  # the blocking check stopped the downstream stage


def test_completion_threshold_is_configurable(io_manager, instance, llm):
    llm.fault = lambda prompt: (400, {"error": {"message": "bad request"}}) if "blue" in prompt else None
    wf = Workflow(
        name="lenient",
        stages=[
            Stage(name="seed", config=sampler_builder(values=["red", "red", "red", "blue"]), num_records=20),
            Stage(
                name="write",
                config=llm_builder("text", "Write about {{ color }} {{ n }}"),
                depends_on=["seed"],
                completion_threshold=0.1,
            ),
        ],
    )
    result = materialize(wf, io_manager, instance, resource=_flaky_resource(llm), raise_on_error=False)
    assert _checks(result, ["lenient", "write"])["completion_rate"] is True


def test_judge_score_check(io_manager, instance, llm):
    llm.fault = None
    judge = dd.DataDesignerConfigBuilder(model_configs=[model_config()])
    judge.add_column(
        dd.LLMJudgeColumnConfig(
            name="grade",
            model_alias="test-model",
            prompt="Grade {{ color }}",
            scores=[dd.Score(name="quality", description="how good", options={1: "bad", 5: "good"})],
        )
    )

    llm.structured_answer = {"quality": {"reasoning": "fine", "score": 5}}
    wf = Workflow(
        name="judged",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=4),
            Stage(name="grade", config=judge, depends_on=["seed"], min_judge_score=4.0),
        ],
    )
    resource = DataDesignerResource(model_providers=[{"name": TEST_PROVIDER, "endpoint": llm.endpoint, "api_key": "k"}])
    result = materialize(wf, io_manager, instance, resource=resource, raise_on_error=False)
    checks = _checks(result, ["judged", "grade"])
    assert checks.get("judge_score") is True, (checks, result.success)
