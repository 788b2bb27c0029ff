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
