"""Model faults from the test server: stages finish through Data Designer's retries, or fail naming the stage,
the model alias and the provider, and the last good output stays in place."""

from __future__ import annotations

import pytest

from dd_assets_tests.faults import FAULTS, ROWS, run_fault


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_quarter_of_requests_failing(fault, tmp_path, llm, instance):
    outcome = run_fault(llm, tmp_path / "data", instance, fault, 0.25)
    assert outcome.previous_intact
    if outcome.success:
        assert outcome.rows_kept >= ROWS // 2
    else:
        assert "workflow 'faults', stage 'write'" in outcome.message
        assert "model alias 'fault-model'" in outcome.message and "provider 'fault_llm'" in outcome.message


@pytest.mark.parametrize("fault", ["500 server error", "malformed JSON"])
def test_every_request_failing_fails_the_stage_clearly(fault, tmp_path, llm, instance):
    outcome = run_fault(llm, tmp_path / "data", instance, fault, 1.0)
    assert not outcome.success
    assert outcome.previous_intact
    assert "workflow 'faults', stage 'write'" in outcome.message
    assert "model alias 'fault-model' (model 'fault-model') on provider 'fault_llm'" in outcome.message
