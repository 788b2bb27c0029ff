"""Model faults from the test server: stages finish through Data Designer's retries, or fail naming the stage,
the model alias and the provider, and the last good output stays in place."""

from __future__ import annotations

import socket

import pytest

from dd_assets import DataDesignerResource
from dd_assets_tests.faults import FAULTS, ROWS, run_fault
from dd_assets_tests.helpers import failure_message, materialize, seeded_llm_workflow
from dd_assets_tests.llm_server import first_prompt_always

# Every 4th request failing: transport-level faults are retried by Data Designer and every record arrives;
# a malformed body is not retried, so exactly the 4 hit records are dropped (12 of 16, above the 0.5 threshold).
ROWS_AT_A_QUARTER = {
    "429 rate limit": ROWS,
    "500 server error": ROWS,
    "503 unavailable": ROWS,
    "timeout": ROWS,
    "malformed JSON": 12,
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_quarter_of_requests_failing(fault, tmp_path, llm, instance):
    outcome = run_fault(llm, tmp_path / "data", instance, fault, 0.25)
    assert outcome.success, outcome.message
    assert outcome.rows_kept == ROWS_AT_A_QUARTER[fault]


@pytest.mark.parametrize("fault", ["500 server error", "malformed JSON"])
def test_one_record_failing_for_good_keeps_the_complete_previous_output(fault, tmp_path, llm, instance):
    # 15 of 16 is below the default completion threshold (0.95): the stage fails before publishing
    outcome = run_fault(
        llm, tmp_path / "data", instance, fault, 1.0, completion_threshold=0.95, hook=first_prompt_always
    )
    assert not outcome.success
    assert outcome.previous_intact and outcome.rows_kept == 0
    assert "generated 15 of 16 requested records (93.8%), below completion_threshold 0.95" in outcome.message


@pytest.mark.parametrize("fault", ["500 server error", "malformed JSON"])
def test_every_request_failing_fails_the_stage_clearly(fault, tmp_path, llm, instance):
    outcome = run_fault(llm, tmp_path / "data", instance, fault, 1.0)
    assert not outcome.success
    assert outcome.previous_intact
    assert "workflow 'faults', stage 'write'" in outcome.message
    assert "model alias 'fault-model' (model 'fault-model') on provider 'fault_llm'" in outcome.message


@pytest.mark.parametrize("shape", ["vllm", "openai"])
def test_a_stage_whose_every_prompt_overflows_the_context_names_the_reason_and_the_model(
    shape, io_manager, instance, llm, llm_resource
):
    # 40 records: Data Designer's early shutdown ends the run, pointing to "the warnings above"
    llm.context_window, llm.context_error = 200, shape
    workflow = seeded_llm_workflow("ctx", 40, prompt="Write a long essay about {{ n }} and {{ color }}. " * 20)
    result = materialize(workflow, io_manager, instance, resource=llm_resource, raise_on_error=False)
    assert not result.success
    message = failure_message(result, "ctx", "write")
    assert "workflow 'ctx', stage 'write'" in message
    assert "warnings above" not in message, message
    assert "HTTP 400 context_window_exceeded from model alias 'test-model' (model 'test-model'" in message, message
    assert "maximum context length is 200 tokens" in message
    assert f"provider 'test_llm' at {llm.endpoint}" in message


def test_a_provider_on_a_dead_port_is_named_with_its_endpoint(io_manager, instance, monkeypatch):
    monkeypatch.setenv("DD_ASSETS_TEST_API_KEY", "sk-test")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    resource = DataDesignerResource(
        model_providers=[{"name": "test_llm", "endpoint": endpoint, "api_key": "DD_ASSETS_TEST_API_KEY"}],
        stall_timeout_s=2,
    )
    result = materialize(seeded_llm_workflow("dead", 4), io_manager, instance, resource=resource, raise_on_error=False)
    assert not result.success
    message = failure_message(result, "dead", "write")
    assert "workflow 'dead', stage 'write'" in message and "api_connection" in message, message
    assert f"provider 'test_llm' at {endpoint}" in message, message
