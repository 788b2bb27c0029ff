"""Cost per stage: tokens and dollars from the resource's prices, matching what the model server counted."""

from __future__ import annotations

import pytest

from dd_assets import DataDesignerResource, Workflow
from dd_assets_tests.helpers import materialize, metadata_of, seeded_llm_workflow
from dd_assets_tests.llm_server import HEALTH_CHECK_PROMPT


def _workflow() -> Workflow:
    return seeded_llm_workflow("cost", 12)


def test_each_stage_records_its_tokens_and_cost_as_the_server_counted_them(io_manager, instance, llm, llm_resource):
    resource = DataDesignerResource(
        model_providers=llm_resource.model_providers, prices={"test-model": {"input": 3.0, "output": 15.0}}
    )
    result = materialize(_workflow(), io_manager, instance, resource=resource)
    assert result.success
    prompts = [p for p in llm.prompts if p != HEALTH_CHECK_PROMPT]
    assert len(prompts) == 12
    server_input = sum(max(1, len(p.split())) for p in prompts)
    server_output = 2 * len(prompts)

    write = metadata_of(result, ["cost", "write"])
    assert write["dd_assets/input_tokens"] == server_input
    assert write["dd_assets/output_tokens"] == server_output
    assert write["dd_assets/cost_usd"] == pytest.approx(server_input * 3.0 / 1e6 + server_output * 15.0 / 1e6)
    seed = metadata_of(result, ["cost", "seed"])
    assert seed["dd_assets/cost_usd"] == 0.0 and seed["dd_assets/input_tokens"] == 0
    logs = [e.user_message for e in instance.all_logs(result.run_id) if "this run so far" in (e.user_message or "")]
    assert any("stage 'write'" in line and f"{server_input} input" in line for line in logs), logs


def test_prices_by_alias_and_unpriced_models(io_manager, instance, llm, llm_resource):
    resource = DataDesignerResource(
        model_providers=llm_resource.model_providers, prices={"other": {"input": 1, "output": 1}}
    )
    result = materialize(_workflow(), io_manager, instance, resource=resource)
    write = metadata_of(result, ["cost", "write"])
    assert write["dd_assets/cost_usd"] == 0.0 and write["dd_assets/unpriced_models"] == "test-model"
    by_alias = DataDesignerResource(
        model_providers=llm_resource.model_providers, prices={"test-model": {"input": 1, "output": 0}}
    )
    assert by_alias.prices["test-model"]["input"] == 1


@pytest.mark.parametrize(
    ("prices", "fragment"),
    [({"m": {"input": 1}}, "must be {'input'"), ({"m": {"input": -1, "output": 0}}, "must be a number of dollars")],
)
def test_bad_prices_are_named(prices, fragment):
    with pytest.raises(Exception, match=fragment):
        DataDesignerResource(prices=prices)


PRICE = {"input": 3000.0, "output": 15000.0}  # dollars per million tokens: large, so the logged totals differ


@pytest.mark.parametrize("execution", ["per_stage", "concurrent"])
def test_a_failed_stage_carries_its_spend_and_the_run_total_counts_every_stage_and_health_check(
    execution, io_manager, instance, llm, llm_resource
):
    import dagster as dg

    from dd_assets import Stage
    from dd_assets.engine.costs import run_total_cost
    from dd_assets_tests.helpers import failure_message, llm_builder

    burn, tally = f"spend-burn-{execution}", f"spend-tally-{execution}"  # fresh aliases: each runs a health check
    workflow = seeded_llm_workflow(
        "spend",
        20,
        Stage(
            name="tally", config=llm_builder("gist", "Summarize {{ n }}", alias=tally, model=tally), depends_on=["seed"]
        ),
        prompt="Write two lines about {{ n }} and {{ color }}",
        token_budget=8 * 9,  # fails with tokens spent
    )
    workflow.stage("write").builder.model_configs[0].model = burn
    workflow.stage("write").builder.model_configs[0].alias = burn
    workflow.stage("write").builder.get_column_config("text").model_alias = burn
    resource = DataDesignerResource(
        model_providers=llm_resource.model_providers,
        run_config={"buffer_size": 5, "max_concurrent_row_groups": 1},
        prices={burn: PRICE, tally: PRICE},
    )
    result = materialize(workflow, io_manager, instance, resource=resource, raise_on_error=False, execution=execution)
    assert "token budget spent" in failure_message(result, "spend", "write", execution)
    assert llm.count("health_check", burn) == 1 and llm.count("health_check", tally) == 1

    burned = [p for p in llm.prompts if p.startswith("Write")]
    assert burned
    burn_in, burn_out = 7 * len(burned), 2 * len(burned)
    burn_cost = (burn_in * PRICE["input"] + burn_out * PRICE["output"]) / 1e6
    check_cost = (1 * PRICE["input"] + 2 * PRICE["output"]) / 1e6  # "Hello!" in, 2 tokens out

    # the failure carries what the failed stage spent
    node = "spend__stages" if execution == "concurrent" else "spend__write"
    failure = {k: v.value for k, v in result.failure_data_for_node(node).user_failure_data.metadata.items()}
    spent = (
        failure["dd_assets/failed_stages_spend"]["write"]
        if execution == "concurrent"
        else {k.removeprefix("dd_assets/"): v for k, v in failure.items()}
    )
    assert (spent["input_tokens"], spent["output_tokens"], spent["health_check_tokens"]) == (burn_in, burn_out, 3)
    assert spent["cost_usd"] == pytest.approx(burn_cost) and spent["health_check_cost_usd"] == pytest.approx(check_cost)

    # ... and so does the stage's own history: an observation of the asset
    observations = [
        e.event_log_entry.asset_observation
        for e in instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION).records
    ]
    (observed,) = [o for o in observations if o.asset_key == dg.AssetKey(["spend", "write"])]
    assert observed.metadata["dd_assets/input_tokens"].value == burn_in
    assert observed.metadata["dd_assets/status"].value == "failed"

    # the run's total: every request the server answered, priced, the failed stage's and the health checks included
    tallied = [p for p in llm.prompts if p.startswith("Summarize")]
    assert len(tallied) == 20
    tally_cost = (2 * len(tallied) * PRICE["input"] + 2 * len(tallied) * PRICE["output"]) / 1e6
    everything = burn_cost + tally_cost + 2 * check_cost
    assert run_total_cost(instance, result.run_id) == pytest.approx(everything)
    lines = [e.user_message for e in instance.all_logs(result.run_id) if "this run so far" in (e.user_message or "")]
    assert lines[-1].endswith(f"this run so far: ${everything:.4f}"), lines
    assert any("stage 'write': failed after spending" in line for line in lines), lines
