"""The stall clock and the budget of StageGuard, on their own (the end-to-end runs are in test_stall_and_budget)."""

from __future__ import annotations

import time

import pytest
from data_designer.engine.models.clients.errors import ProviderError, ProviderErrorKind

from dd_assets.engine.guard_hooks import ModelCall
from dd_assets.engine.stage_guard import StageGuard

CALL = ModelCall(alias="writer", model="m-1", provider="p")


def _error(kind: ProviderErrorKind, status: int | None = None) -> ProviderError:
    return ProviderError(kind=kind, message="x", status_code=status, provider_name="p", model_name="m-1")


def test_retryable_failures_keep_the_clock_running_and_a_success_restarts_it():
    guard = StageGuard(stall_timeout_s=10, token_budget=None)
    start = time.monotonic()
    guard.before_attempt(CALL)
    guard.after_attempt(CALL, _error(ProviderErrorKind.RATE_LIMIT, 429))
    guard.check_stall(start + 9)
    assert guard.stop_reason is None
    guard.before_attempt(CALL)
    guard.after_attempt(CALL, None)  # progress
    guard.check_stall(start + 15)
    assert guard.stop_reason is None  # nothing waits after a success with nothing in flight
    guard.before_attempt(CALL)
    guard.after_attempt(CALL, _error(ProviderErrorKind.RATE_LIMIT, 429))
    guard.check_stall(time.monotonic() + 10.5)
    reason = guard.stop_reason
    assert reason and "stall_timeout_s=10" in reason and "model alias 'writer' (model 'm-1', provider 'p')" in reason
    assert "last error: HTTP 429 rate_limit (1 failed attempt(s) since the last success)" in reason


def test_a_failure_data_designer_gives_up_on_stops_the_clock():
    guard = StageGuard(stall_timeout_s=5, token_budget=None)
    guard.before_attempt(CALL)
    guard.after_attempt(CALL, _error(ProviderErrorKind.BAD_REQUEST, 400))  # the record is dropped: no one waits
    guard.check_stall(time.monotonic() + 60)
    assert guard.stop_reason is None


def test_a_stopped_stage_refuses_requests_without_sending_them():
    guard = StageGuard(stall_timeout_s=5, token_budget=100, tokens_before=40)
    guard.before_attempt(CALL)
    guard.after_attempt(CALL, None)
    guard.add_tokens(50)
    assert guard.stop_reason is None
    guard.add_tokens(20)  # 40 earlier + 70 now > 100
    assert guard.budget_spent
    assert guard.stop_reason == (
        "token budget spent: 110 tokens used, 40 of them by earlier runs of this work, token_budget is 100; "
        "no further model requests were sent"
    )
    with pytest.raises(ProviderError) as refused:
        guard.before_attempt(CALL)
    # a kind Data Designer retries later rather than dropping the record into a short batch
    assert refused.value.kind == ProviderErrorKind.REQUEST_ADMISSION_TIMEOUT
    assert guard.refused == 1


def test_a_request_nothing_answered_keeps_the_clock_running_and_an_answered_error_does_not():
    """A refused connection or a timeout without a status: the provider is gone, so the stage still waits."""
    for kind in (ProviderErrorKind.API_CONNECTION, ProviderErrorKind.TIMEOUT):
        guard = StageGuard(stall_timeout_s=5, token_budget=None)
        guard.before_attempt(CALL)
        guard.after_attempt(CALL, _error(kind))
        guard.check_stall(time.monotonic() + 5.5)
        assert guard.stop_reason and f"last error: {kind.value}" in guard.stop_reason, kind
    answered = StageGuard(stall_timeout_s=5, token_budget=None)
    answered.before_attempt(CALL)
    answered.after_attempt(CALL, _error(ProviderErrorKind.TIMEOUT, 408))  # the provider answered, with a status
    answered.check_stall(time.monotonic() + 60)
    assert answered.stop_reason is None
