"""Stall deadline and token budgets: a stage stops sending requests, fails clearly and keeps its finished batches."""

from __future__ import annotations

import threading
import time

import data_designer.config as dd
import pytest
from data_designer.config.custom_column import custom_column_generator

from dd_assets import DataDesignerResource, Stage, Workflow
from dd_assets_tests.helpers import (
    FailOnce,
    failure_message,
    finished_batches,
    llm_builder,
    materialize,
    metadata_of,
    model_config,
    sampler_builder,
    seeded_llm_workflow,
)
from dd_assets_tests.llm_server import HEALTH_CHECK_PROMPT, after_n_answers

RATE_LIMITED = (429, {"error": {"message": "rate limit exceeded", "type": "rate_limit_error"}})
RECORDS, BATCH = 20, 5


def _workflow(*, sibling: bool = False, **stage_fields) -> Workflow:
    """seed -> write (with ``stage_fields``), and with ``sibling`` an unlimited branch seed -> summary."""
    more = (
        [Stage(name="summary", config=llm_builder("gist", "Summarize {{ n }}"), depends_on=["seed"])] if sibling else []
    )
    return seeded_llm_workflow("guard", RECORDS, *more, **stage_fields)


def _resource(llm_resource: DataDesignerResource, **fields) -> DataDesignerResource:
    """Batches of 5 generated one after another, so a stop leaves whole batches behind."""
    return DataDesignerResource(
        model_providers=llm_resource.model_providers,
        run_config={"buffer_size": BATCH, "max_concurrent_row_groups": 1},
        **fields,
    )


def _generation_prompts(llm) -> list[str]:
    """The prompts the ``write`` stage sent."""
    return [p for p in llm.prompts if p != HEALTH_CHECK_PROMPT and p.startswith("Write")]


@pytest.mark.parametrize("execution", ["per_stage", "concurrent"])
def test_a_stage_rate_limited_for_good_fails_within_its_deadline_and_resumes(
    execution, io_manager, instance, llm, llm_resource
):
    llm.fault = hook = after_n_answers(llm, 2 * BATCH, RATE_LIMITED)
    stall_timeout_s = 3.0
    resource = _resource(llm_resource, stall_timeout_s=30.0)  # the stage's own field wins
    result = materialize(
        _workflow(stall_timeout_s=stall_timeout_s),
        io_manager,
        instance,
        resource=resource,
        raise_on_error=False,
        execution=execution,
    )
    assert not result.success
    message = failure_message(result, "guard", "write", execution)
    for fragment in (
        "workflow 'guard', stage 'write'",
        "stalled: no model request succeeded for",
        "stall_timeout_s=3",
        "model alias 'test-model' (model 'test-model', provider",
        "last error: HTTP 429 rate_limit",
        "Kept 2 finished batch(es)",
    ):
        assert fragment in message, message

    # within the deadline plus one batch's time, counted from the first 429
    failed_at = time.monotonic()
    answered = sorted(llm.spans)[: 2 * BATCH]
    one_batch = (answered[-1][1] - answered[0][0]) / 2
    waited = failed_at - hook.first_fault_at
    assert stall_timeout_s - 0.1 <= waited <= stall_timeout_s + one_batch + 1.0, (waited, one_batch)
    assert finished_batches(io_manager.work_root("guard", "write")) == 2

    # the provider recovers: the rerun requests only the records of the two unfinished batches
    llm.reset()
    result = materialize(
        _workflow(stall_timeout_s=stall_timeout_s),
        io_manager,
        instance,
        resource=resource,
        selection=["guard/write"],
        execution=execution,
    )
    assert result.success
    assert len(_generation_prompts(llm)) == RECORDS - 2 * BATCH
    assert metadata_of(result, ["guard", "write"])["dagster/row_count"] == RECORDS


def test_a_provider_that_never_answers_fails_the_stage_at_its_deadline(io_manager, instance, llm, llm_resource):
    """Requests in flight that never come back are a stall too; the stage does not wait for the HTTP timeout."""
    llm.fault = after_n_answers(llm, BATCH, "hang")
    llm.hang_s = 8.0  # far past the deadline, well inside the client's 60 s timeout
    try:
        started = time.monotonic()
        result = materialize(
            _workflow(stall_timeout_s=2.0),
            io_manager,
            instance,
            resource=_resource(llm_resource),
            raise_on_error=False,
        )
        assert time.monotonic() - started < 8.0
        message = failure_message(result, "guard", "write")
        assert "stalled: no model request succeeded for" in message and "no answer yet" in message, message
        assert "Kept 1 finished batch(es)" in message
    finally:
        deadline = time.monotonic() + 15
        while llm.in_flight and time.monotonic() < deadline:  # let the server's hanging handlers end
            time.sleep(0.2)
        llm.hang_s = 2.0


TOKENS_PER_REQUEST = 7 + 2  # the server counts the prompt's words as input tokens and answers with 2 tokens


@pytest.mark.parametrize("execution", ["per_stage", "concurrent"])
def test_a_budget_stops_a_stage_and_a_rerun_with_a_larger_budget_resumes(
    execution, io_manager, instance, llm, llm_resource
):
    budget = 8 * TOKENS_PER_REQUEST
    resource = _resource(llm_resource)
    workflow = _workflow(token_budget=budget, sibling=True)
    result = materialize(workflow, io_manager, instance, resource=resource, raise_on_error=False, execution=execution)
    assert not result.success
    message = failure_message(result, "guard", "write", execution)
    sent = len(_generation_prompts(llm))
    assert f"token budget spent: {sent * TOKENS_PER_REQUEST:,} tokens used, token_budget is {budget:,}" in message, (
        message
    )
    assert budget <= sent * TOKENS_PER_REQUEST <= budget + 2 * TOKENS_PER_REQUEST  # at most the requests in flight
    assert "rerun with a larger token_budget to resume them" in message
    finished = finished_batches(io_manager.work_root("guard", "write"))
    assert 1 <= finished < RECORDS // BATCH
    assert f"Kept {finished} finished batch(es)" in message
    # the budget is per stage: the sibling branch, sharing the model, is published in full
    assert metadata_of(result, ["guard", "summary"])["dagster/row_count"] == RECORDS

    # the same budget again: the earlier run's tokens count, so nothing is sent
    llm.reset()
    again = materialize(
        workflow,
        io_manager,
        instance,
        resource=resource,
        raise_on_error=False,
        execution=execution,
        selection=["guard/write"],
    )
    assert not again.success and _generation_prompts(llm) == []
    assert "of them by earlier runs of this work" in failure_message(again, "guard", "write", execution)

    # a larger budget for this run (run config): only the records of unfinished batches are requested
    llm.reset()
    rerun = materialize(
        workflow,
        io_manager,
        instance,
        resource=resource,
        execution=execution,
        selection=["guard/write"],
        run_config={"ops": {"guard__write": {"config": {"token_budget": 100 * TOKENS_PER_REQUEST}}}},
    )
    assert rerun.success
    assert len(_generation_prompts(llm)) == RECORDS - finished * BATCH
    assert metadata_of(rerun, ["guard", "write"])["dagster/row_count"] == RECORDS


def test_bad_budgets_and_deadlines_are_named_at_load(io_manager, instance, llm_resource):
    from dd_assets import WorkflowDefinitionError

    with pytest.raises(WorkflowDefinitionError, match=r"stage 'write'.*token_budget.*must be a whole number"):
        _workflow(token_budget=0)
    with pytest.raises(WorkflowDefinitionError, match=r"stage 'write'.*stall_timeout_s.*must be a number of seconds"):
        _workflow(stall_timeout_s=-1)
    with pytest.raises(Exception, match="stall_timeout_s"):
        DataDesignerResource(stall_timeout_s=0)
    result = materialize(
        _workflow(),
        io_manager,
        instance,
        resource=_resource(llm_resource),
        raise_on_error=False,
        run_config={"ops": {"guard__write": {"config": {"token_budget": -5}}}},
    )
    assert "run config token_budget must be a whole number of tokens >= 1, got -5" in failure_message(
        result, "guard", "write"
    )


@custom_column_generator(required_columns=["n"], model_aliases=["serial"])
def _ask_the_model(row: dict, generator_params: None, models: dict) -> dict:
    """A synchronous custom column calling a model (Data Designer bridges it to its async client)."""
    text, _ = models["serial"].generate(prompt=f"Write two lines about {row['n']}", parser=str)
    row["asked"] = text
    return row


def test_a_custom_column_calling_a_rate_limited_model_also_stalls(io_manager, instance, llm, llm_resource):
    one_at_a_time = model_config(alias="serial").model_copy(
        update={"inference_parameters": dd.ChatCompletionInferenceParams(max_parallel_requests=1, max_tokens=32)}
    )
    builder = dd.DataDesignerConfigBuilder(model_configs=[one_at_a_time])
    builder.add_column(dd.CustomColumnConfig(name="asked", generator_function=_ask_the_model))
    workflow = Workflow(
        name="guard",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=RECORDS),
            Stage(name="write", config=builder, depends_on=["seed"], stall_timeout_s=2.0),
        ],
    )
    llm.fault = after_n_answers(llm, BATCH, RATE_LIMITED)
    started = time.monotonic()
    result = materialize(workflow, io_manager, instance, resource=_resource(llm_resource), raise_on_error=False)
    assert time.monotonic() - started < 30
    message = failure_message(result, "guard", "write")
    assert "stalled" in message and "model alias 'serial'" in message, message
    assert "last error: HTTP 429 rate_limit" in message
    assert "SyncClientUnavailable" not in message


def test_a_budget_smaller_than_one_batch_is_not_spent_again_by_a_rerun(io_manager, instance, llm, llm_resource):
    """No batch finished, so Data Designer has nothing to resume, yet the tokens spent on this work still count."""
    resource = _resource(llm_resource)
    workflow = _workflow(token_budget=2 * TOKENS_PER_REQUEST)
    result = materialize(workflow, io_manager, instance, resource=resource, raise_on_error=False)
    assert "token budget spent" in failure_message(result, "guard", "write")
    assert finished_batches(io_manager.work_root("guard", "write")) == 0
    first = len(_generation_prompts(llm))
    assert 2 <= first < BATCH

    llm.reset()
    again = materialize(
        workflow, io_manager, instance, resource=resource, raise_on_error=False, selection=["guard/write"]
    )
    message = failure_message(again, "guard", "write")
    assert _generation_prompts(llm) == [] and llm.count("health_check") == 0
    assert (
        f"{first * TOKENS_PER_REQUEST:,} tokens used, {first * TOKENS_PER_REQUEST:,} of them by earlier runs" in message
    )


def test_the_tokens_spent_travel_with_the_checkpoint_to_another_machine(
    s3_server, s3_bucket, instance, llm, llm_resource, tmp_path
):
    from dd_assets import StageParquetIOManager

    def machine(name: str) -> StageParquetIOManager:
        return StageParquetIOManager(
            base_dir=f"s3://{s3_bucket}/prefix", local_work_dir=str(tmp_path / name), **s3_server.storage_options()
        )

    resource = _resource(llm_resource)
    workflow = _workflow(token_budget=8 * TOKENS_PER_REQUEST)
    first = materialize(workflow, machine("machine-a"), instance, resource=resource, raise_on_error=False)
    assert "token budget spent" in failure_message(first, "guard", "write")
    spent = len(_generation_prompts(llm)) * TOKENS_PER_REQUEST

    llm.reset()  # machine B has none of A's local files, only the store's checkpoint
    again = materialize(
        workflow, machine("machine-b"), instance, resource=resource, raise_on_error=False, selection=["guard/write"]
    )
    assert _generation_prompts(llm) == []
    assert f"{spent:,} tokens used, {spent:,} of them by earlier runs" in failure_message(again, "guard", "write")


def test_finished_work_is_published_even_when_earlier_runs_spent_the_budget(io_manager, instance, llm, llm_resource):
    """Every batch was generated and a later step failed: finishing needs no request, so the budget does not block."""
    resource = _resource(llm_resource)
    fails_once = FailOnce()
    first = materialize(_workflow(on_success=fails_once), io_manager, instance, resource=resource, raise_on_error=False)
    assert "on_success raised" in failure_message(first, "guard", "write")
    assert len(_generation_prompts(llm)) == RECORDS

    llm.reset()
    rerun = materialize(
        _workflow(on_success=fails_once, token_budget=TOKENS_PER_REQUEST),  # far below what the first run used
        io_manager,
        instance,
        resource=resource,
        selection=["guard/write"],
    )
    assert rerun.success and _generation_prompts(llm) == []
    assert metadata_of(rerun, ["guard", "write"])["dagster/row_count"] == RECORDS


@pytest.fixture
def silent_endpoint():
    """A provider endpoint that accepts connections (the kernel's listen backlog) and never answers."""
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        listener.close()


@pytest.mark.parametrize("execution", ["per_stage", "concurrent"])
def test_a_provider_that_accepts_connections_and_never_answers_fails_at_the_deadline_even_in_its_health_check(
    execution, silent_endpoint, io_manager, instance, llm_resource
):
    provider = {**llm_resource.model_providers[0], "endpoint": silent_endpoint}
    resource = DataDesignerResource(model_providers=[provider], run_config={"buffer_size": BATCH})
    started = time.monotonic()
    result = materialize(
        _workflow(stall_timeout_s=3.0),
        io_manager,
        instance,
        resource=resource,
        raise_on_error=False,
        execution=execution,
    )
    elapsed = time.monotonic() - started
    message = failure_message(result, "guard", "write", execution)
    assert not result.success
    assert "stalled: no model request succeeded for 3." in message and "stall_timeout_s=3" in message, message
    assert "no answer yet" in message
    assert elapsed < 3.0 + 8.0, elapsed  # the deadline and the run's own overhead, not the 60 s HTTP timeout


class _DiesAfter:
    """A fault hook that answers ``n`` generation requests, then stops its server for good: later requests are
    refused at connect (a provider process that died mid-stage). ``died_at`` is when (``time.monotonic()``)."""

    def __init__(self, server, n: int):
        self.server, self.n, self.answered = server, n, 0
        self.died_at: float | None = None

    def __call__(self, prompt: str):
        if prompt == HEALTH_CHECK_PROMPT:
            return None
        with self.server.lock:
            self.answered += 1
            if self.answered == self.n:
                self.died_at = time.monotonic()
                threading.Thread(target=self.server.stop, daemon=True).start()
        return None


@pytest.mark.parametrize("execution", ["per_stage", "concurrent"])
def test_a_provider_that_dies_mid_stage_fails_it_as_stalled_at_its_deadline(
    execution, io_manager, instance, llm_resource
):
    """Connection errors mean nothing answered: they keep the stall clock running between Data Designer's retries."""
    from dd_assets_tests.llm_server import FakeLLMServer

    server = FakeLLMServer().start()
    server.fault = dies = _DiesAfter(server, 2 * BATCH)
    provider = {**llm_resource.model_providers[0], "endpoint": server.endpoint}
    resource = DataDesignerResource(
        model_providers=[provider], run_config={"buffer_size": BATCH, "max_concurrent_row_groups": 1}
    )
    stall_timeout_s = 3.0
    result = materialize(
        _workflow(stall_timeout_s=stall_timeout_s),
        io_manager,
        instance,
        resource=resource,
        raise_on_error=False,
        execution=execution,
    )
    failed_at = time.monotonic()
    assert dies.died_at is not None and not result.success
    message = failure_message(result, "guard", "write", execution)
    assert "stalled: no model request succeeded for" in message and "last error: api_connection" in message, message
    assert "generated" not in message  # not the completion threshold, minutes later
    assert failed_at - dies.died_at <= stall_timeout_s + 6.0, failed_at - dies.died_at
    assert finished_batches(io_manager.work_root("guard", "write")) >= 2
