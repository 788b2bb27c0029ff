"""Concurrent execution: ready stages run at the same time on one shared Data Designer, each still its own asset.

Branches overlap in time (the test server's request spans), one alias's request admission is shared by every
stage that uses it (the server's peak of requests in flight), a failure stops only its downstream stages,
subsets read unselected upstreams from storage, and each stage's usage and log lines stay its own.
"""

from __future__ import annotations

import dagster as dg
import data_designer.config as dd
import pytest

from dd_assets import (
    DataDesignerResource,
    DataDesignerStageTranslator,
    Stage,
    StageParquetIOManager,
    Workflow,
    build_workflow_definitions,
)
from dd_assets_tests.conftest import TEST_API_KEY_ENV, TEST_PROVIDER
from dd_assets_tests.helpers import FailOnce, materialize, metadata_of, sampler_builder


def _model(alias: str, parallel: int) -> dd.ModelConfig:
    return dd.ModelConfig(
        alias=alias,
        model=alias,
        provider=TEST_PROVIDER,
        inference_parameters=dd.ChatCompletionInferenceParams(max_parallel_requests=parallel, max_tokens=16),
    )


def _branch(column: str, alias: str, parallel: int = 4) -> dd.DataDesignerConfigBuilder:
    builder = dd.DataDesignerConfigBuilder(model_configs=[_model(alias, parallel)])
    builder.add_column(dd.LLMTextColumnConfig(name=column, model_alias=alias, prompt=f"{column} about {{{{ n }}}}"))
    return builder


def _fan_out(name: str, aliases: list[str], rows: int = 12, **branch_fields) -> Workflow:
    return Workflow(
        name=name,
        stages=[
            Stage(name="root", config=sampler_builder(), num_records=rows),
            *[
                Stage(name=f"b{i}", config=_branch(f"text{i}", alias), depends_on=["root"], **branch_fields)
                for i, alias in enumerate(aliases)
            ],
        ],
    )


def _resource(llm, **run_config) -> DataDesignerResource:
    return DataDesignerResource(
        model_providers=[{"name": TEST_PROVIDER, "endpoint": llm.endpoint, "api_key": TEST_API_KEY_ENV}],
        run_config={"buffer_size": 4, **run_config},
    )


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
    return bool(a and b) and max(min(s for s, _ in a), min(s for s, _ in b)) < min(
        max(e for _, e in a), max(e for _, e in b)
    )


def test_independent_branches_generate_at_the_same_time(io_manager, instance, llm):
    llm.delay_s = 0.05
    wf = _fan_out("fan", ["m-a", "m-b", "m-c"])
    result = materialize(wf, io_manager, instance, resource=_resource(llm), execution="concurrent")
    assert result.success
    spans = [llm.spans_matching(f"text{i} about") for i in range(3)]
    assert all(len(s) == 12 for s in spans)
    assert _overlap(spans[0], spans[1]) and _overlap(spans[1], spans[2]) and _overlap(spans[0], spans[2])
    for i in range(3):  # each stage is still its own asset, published with its own record
        assert io_manager.read_stage("fan", f"b{i}").num_rows == 12
        assert metadata_of(result, ["fan", f"b{i}"])["dagster/row_count"] == 12


def test_stages_on_one_alias_share_its_request_admission(io_manager, instance, llm):
    llm.delay_s = 0.05
    wf = _fan_out("shared_alias", ["one-alias"] * 3, rows=16)
    result = materialize(wf, io_manager, instance, resource=_resource(llm), execution="concurrent")
    assert result.success
    spans = [llm.spans_matching(f"text{i} about") for i in range(3)]
    assert _overlap(spans[0], spans[1]) or _overlap(spans[1], spans[2])  # the branches did run together ...
    assert llm.peak_in_flight <= 4  # ... within the alias's max_parallel_requests, shared by all three
    assert llm.count("health_check") <= 1


def test_per_stage_usage_is_exact_while_stages_overlap(io_manager, instance, llm):
    llm.delay_s = 0.02
    wf = Workflow(
        name="usage",
        stages=[
            Stage(name="root", config=sampler_builder(), num_records=10),
            Stage(name="small", config=_branch("short", "shared-m"), depends_on=["root"], num_records=3),
            Stage(name="large", config=_branch("long", "shared-m"), depends_on=["root"], num_records=9),
        ],
    )
    result = materialize(wf, io_manager, instance, resource=_resource(llm), execution="concurrent")
    for stage, rows, word in (("small", 3, "short"), ("large", 9, "long")):
        usage = metadata_of(result, ["usage", stage])["dd_assets/model_usage"]["shared-m"]
        assert usage["successful_requests"] == rows == len(llm.spans_matching(f"{word} about"))
        # the server counts one prompt token per word: "<word> about <n>" is 3 words
        assert usage["input_tokens"] == 3 * rows and usage["output_tokens"] == 2 * rows


def test_a_failing_stage_stops_only_its_downstream_stages(io_manager, instance, llm):
    def explode(_):
        raise RuntimeError("broken branch")

    wf = Workflow(
        name="isolate",
        stages=[
            Stage(name="root", config=sampler_builder(), num_records=6),
            Stage(name="bad", config=_branch("bad", "iso-a"), depends_on=["root"], on_success=explode),
            Stage(name="after_bad", config=_branch("after", "iso-a"), depends_on=["bad"]),
            Stage(name="good", config=_branch("good", "iso-b"), depends_on=["root"]),
            Stage(name="after_good", config=_branch("next", "iso-b"), depends_on=["good"]),
        ],
    )
    result = materialize(
        wf, io_manager, instance, resource=_resource(llm), execution="concurrent", raise_on_error=False
    )
    assert not result.success
    message = result.failure_data_for_node("isolate__stages").error.message
    assert "workflow 'isolate': 1 stage(s) failed, 1 not run (3 published)" in message
    assert "stage 'bad': workflow 'isolate', stage 'bad': on_success raised RuntimeError('broken branch')" in message
    assert "stage 'after_bad': not run: upstream stage 'bad' failed" in message
    assert io_manager.read_record("isolate", "bad") is None and io_manager.read_record("isolate", "after_bad") is None
    assert io_manager.read_stage("isolate", "after_good").num_rows == 6  # the independent branch finished
    materialized = {e.asset_key.path[1] for e in result.get_asset_materialization_events()}
    assert materialized == {"root", "good", "after_good"}


def test_a_subset_runs_only_its_stages_and_reads_the_rest_from_storage(io_manager, instance, llm):
    wf = _fan_out("subset", ["s-a", "s-b"], rows=5)
    materialize(wf, io_manager, instance, resource=_resource(llm), execution="concurrent")
    before = {name: io_manager.read_record("subset", name)["version"] for name in ("root", "b0", "b1")}
    llm.reset()
    result = materialize(
        wf,
        io_manager,
        instance,
        resource=_resource(llm),
        execution="concurrent",
        selection=[dg.AssetKey(["subset", "b1"])],
    )
    assert result.success
    assert {e.asset_key.path[1] for e in result.get_asset_materialization_events()} == {"b1"}
    assert io_manager.read_record("subset", "root")["version"] == before["root"]  # read, not rerun
    assert io_manager.read_record("subset", "b0")["version"] == before["b0"]
    assert io_manager.read_record("subset", "b1")["version"] != before["b1"]
    assert llm.count("generation") == 5 and not llm.spans_matching("text0 about")


def test_each_stage_logs_only_its_own_lines(io_manager, instance, llm):
    llm.delay_s = 0.02
    wf = _fan_out("logs", ["l-a", "l-b"], rows=8)
    result = materialize(wf, io_manager, instance, resource=_resource(llm), execution="concurrent")
    messages = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    for i, other in ((0, 1), (1, 0)):
        own = [m for m in messages if m.startswith(f"[logs/b{i}]")]
        assert any(f"text{i}" in m for m in own)  # Data Designer's lines about its column ...
        assert not any(f"text{other}" in m for m in own)  # ... and none about the other branch's


def test_max_concurrent_stages_caps_stages_running_at_once(io_manager, instance, llm):
    llm.delay_s = 0.03
    wf = _fan_out("capped", ["c-a", "c-b"], rows=8)
    result = materialize(
        wf,
        io_manager,
        instance,
        resource=_resource(llm),
        execution="concurrent",
        run_config={"ops": {"capped__stages": {"config": {"max_concurrent_stages": 1}}}},
    )
    assert result.success
    assert not _overlap(llm.spans_matching("text0 about"), llm.spans_matching("text1 about"))


def test_unknown_stages_in_run_config_are_named(io_manager, instance):
    wf = Workflow(name="rc", stages=[Stage(name="a", config=sampler_builder(), num_records=2)])
    result = materialize(
        wf,
        io_manager,
        instance,
        execution="concurrent",
        run_config={"ops": {"rc__stages": {"config": {"stages": {"ghost": {"num_records": 3}}}}}},
        raise_on_error=False,
    )
    message = result.failure_data_for_node("rc__stages").error.message
    assert "workflow 'rc': run config names unknown stage(s) 'ghost' (stages: a)" in message


class _Pooled(DataDesignerStageTranslator):
    def __init__(self, pools: dict[str, str]):
        self.pools = pools

    def get_pool(self, workflow, stage):
        return self.pools.get(stage.name)


def test_a_concurrent_workflow_runs_in_its_stages_pool_and_mixed_pools_are_refused():
    wf = _fan_out("pooled", ["p-a"], rows=2)
    defs = build_workflow_definitions(wf, translator=_Pooled({"root": "llm", "b0": "llm"}), execution="concurrent")
    (asset,) = defs.assets
    assert asset.op.pool == "llm"
    assert {k.to_user_string() for k in asset.keys} == {"pooled/root", "pooled/b0"}
    with pytest.raises(Exception, match="stages name different Dagster pools"):
        build_workflow_definitions(wf, translator=_Pooled({"root": "llm"}), execution="concurrent")


def test_resume_in_concurrent_mode_sends_no_request_twice(io_manager, instance, llm):
    callback = FailOnce()
    wf = _fan_out("resume_c", ["r-a"], rows=6, on_success=callback, on_success_version="1")
    first = materialize(wf, io_manager, instance, resource=_resource(llm), execution="concurrent", raise_on_error=False)
    assert not first.success and llm.count("generation") == 6
    llm.reset()
    second = materialize(
        wf,
        io_manager,
        instance,
        resource=_resource(llm),
        execution="concurrent",
        selection=[dg.AssetKey(["resume_c", "b0"])],
    )
    assert second.success and llm.count("generation") == 0
    assert metadata_of(second, ["resume_c", "b0"])["dd_assets/resumed"] is True


FAN_YAML = """\
name: fanyaml
execution: concurrent
max_concurrent_stages: 2
stages:
  - name: root
    num_records: 6
    config: {columns: [{name: n, column_type: sampler, sampler_type: uniform, params: {low: 0, high: 9},
                        convert_to: int}]}
  - name: left
    depends_on: [root]
    config: {columns: [{name: l, column_type: expression, expr: "L{{ n }}"}]}
  - name: right
    depends_on: [root]
    config: {columns: [{name: r, column_type: expression, expr: "R{{ n }}"}]}
  - name: both
    depends_on: [left, right]
    combine: zip
    config: {columns: [{name: lr, column_type: expression, expr: "{{ l }}{{ r }}"}]}
"""


def test_a_yaml_concurrent_workflow_from_the_cli_and_a_subset_of_it(tmp_path):
    from dd_assets_tests.test_cli_e2e import _dagster, _env, _record

    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "fan.yaml").write_text(FAN_YAML)
    env = _env(tmp_path, DD_ASSETS_WORKFLOWS_DIR=str(workflows))
    proc = _dagster(["asset", "materialize", "-m", "dd_assets.definitions", "--select", "group:fanyaml"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fanyaml__stages" in proc.stdout + proc.stderr  # one step ran the workflow
    first = {name: _record(tmp_path, "fanyaml", name) for name in ("root", "left", "right", "both")}
    assert first["both"]["output_rows"] == 6
    proc = _dagster(["asset", "materialize", "-m", "dd_assets.definitions", "--select", "fanyaml/right"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _record(tmp_path, "fanyaml", "right")["version"] != first["right"]["version"]
    assert all(_record(tmp_path, "fanyaml", n)["version"] == first[n]["version"] for n in ("root", "left", "both"))


@pytest.mark.parametrize("cap", [0, -1])
def test_a_run_config_max_concurrent_stages_below_one_is_refused_naming_workflow_and_field(
    cap, io_manager, instance, llm
):
    wf = _fan_out("capcheck", ["cc-a"], rows=2)
    result = materialize(
        wf,
        io_manager,
        instance,
        resource=_resource(llm),
        execution="concurrent",
        run_config={"ops": {"capcheck__stages": {"config": {"max_concurrent_stages": cap}}}},
        raise_on_error=False,
    )
    assert not result.success
    message = result.failure_data_for_node("capcheck__stages").error.message
    assert (
        f"workflow 'capcheck': run config max_concurrent_stages must be a whole number >= 1 (or unset), got {cap}"
        in message
    ), message
    assert "ThreadPoolExecutor" not in message and "max_workers" not in message
    assert result.get_asset_materialization_events() == [] and llm.count() == 0


def _generation_after(llm, moment: float) -> int:
    """Generation requests the server started answering after ``moment`` (``time.monotonic()``)."""
    with llm.lock:
        return sum(1 for start, _, prompt in llm.spans if start > moment and prompt != "Hello!")


class _FailsToPublish(StageParquetIOManager):
    """Storage that fails to publish one stage (a full disk, a lost bucket), as a real IO manager can."""

    fail_stage: str = "quick"

    def handle_output(self, context, obj):
        if context.asset_key.path[-1] == self.fail_stage:
            raise OSError(28, "No space left on device")
        return super().handle_output(context, obj)


def test_a_failed_publish_stops_the_stages_still_generating(tmp_path, instance, llm):
    import time

    from dd_assets_tests.helpers import finished_batches

    llm.delay_s = 0.1
    wf = Workflow(
        name="stopall",
        stages=[
            Stage(name="root", config=sampler_builder(), num_records=60),
            Stage(name="quick", config=_branch("quick", "stop-q", 2), depends_on=["root"], num_records=2),
            Stage(name="slow", config=_branch("slow", "stop-s", 2), depends_on=["root"]),
        ],
    )
    io_manager = _FailsToPublish(base_dir=str(tmp_path / "data"))
    result = materialize(
        wf, io_manager, instance, resource=_resource(llm), execution="concurrent", raise_on_error=False
    )
    ended = time.monotonic()
    assert not result.success
    answered = len(llm.spans_matching("slow about"))
    assert answered < 60 - 8, answered  # the slow stage did not generate to the end
    time.sleep(1.0)
    assert _generation_after(llm, ended) <= 2  # at most the requests in flight at the stop (max_parallel_requests)
    assert len(llm.spans_matching("slow about")) <= answered + 2
    assert io_manager.read_record("stopall", "slow") is None  # nothing of it published ...
    assert finished_batches(io_manager.work_root("stopall", "slow")) >= 0  # ... its finished batches kept for resume


@pytest.mark.parametrize("execution", ["concurrent", "per_stage"])
def test_terminating_a_run_stops_its_running_stages_within_the_grace(execution, tmp_path, llm):
    """SIGINT (what the UI's Terminate and SIGTERM become) in the middle of a concurrent run's LLM stage."""
    import os
    import signal
    import subprocess
    import time

    from dd_assets_tests.cli_runs import llm_env, materialize_cmd, run
    from dd_assets_tests.helpers import finished_batches

    env = llm_env(
        tmp_path, llm, DD_ASSETS_TEST_ROWS="60", DD_ASSETS_TEST_BUFFER="5", DD_ASSETS_TEST_EXECUTION=execution
    )
    assert run("slow/seed", env, tmp_path).returncode == 0
    llm.reset()
    llm.delay_s = 0.3
    staging = tmp_path / "data" / "slow" / "write" / ".staging"
    proc = subprocess.Popen(
        materialize_cmd("slow/write"),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and finished_batches(staging) < 2:
            time.sleep(0.05)
        assert finished_batches(staging) >= 2
        os.killpg(proc.pid, signal.SIGINT)
        stopped_at = time.monotonic()
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    exited = time.monotonic() - stopped_at
    assert proc.returncode != 0
    assert exited < 10.0, exited  # the grace, plus the process's own exit; not the rest of the generation
    # after the stop, at most the requests already in flight (max_parallel_requests=2) were answered
    assert _generation_after(llm, stopped_at + 0.1) <= 2, llm.count("generation")
    assert llm.count("generation") < 60 - 10
    kept = finished_batches(staging)
    assert kept >= 2  # finished batches stay, for the next run to resume
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        (terminated,) = [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.FAILURE]
        messages = [e.user_message for e in instance.all_logs(terminated.run_id)]
    if execution == "concurrent":
        assert "workflow 'slow': the run was terminated; stopping 1 running stage(s) ('write')" in messages, output[
            -3000:
        ]


def test_reexecution_from_failure_reads_published_stages_and_runs_only_the_failed_ones(tmp_path, llm, monkeypatch):
    """a (LLM) published and b failed: re-executing from failure runs b alone; a is read, not paid for again."""
    from dd_assets_tests.conftest import TEST_API_KEY_VALUE
    from dd_assets_tests.fixtures import reexecution_project
    from dd_assets_tests.llm_server import first_prompt_always

    monkeypatch.setenv("DD_ASSETS_TEST_ENDPOINT", llm.endpoint)
    monkeypatch.setenv("DD_ASSETS_BASE_DIR", str(tmp_path / "data"))
    monkeypatch.setenv(TEST_API_KEY_ENV, TEST_API_KEY_VALUE)
    io_manager = StageParquetIOManager(base_dir=str(tmp_path / "data"))
    job = dg.reconstructable(reexecution_project.job)
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        fault = first_prompt_always(llm, (500, {"error": {"message": "server error"}}))
        llm.fault = lambda prompt: fault(prompt) if prompt.startswith("Second") else None
        first = dg.execute_job(job, instance=instance)
        assert not first.success
        assert llm.count("generation", "rx-a") == reexecution_project.ROWS
        published = {name: io_manager.read_record("reexec", name)["version"] for name in ("seed", "a")}
        assert io_manager.read_record("reexec", "b") is None

        llm.reset()
        again = dg.execute_job(
            job, instance=instance, reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance)
        )
        assert again.success
        assert llm.count("generation", "rx-a") == 0  # a is not paid for again ...
        assert {name: io_manager.read_record("reexec", name)["version"] for name in ("seed", "a")} == published
        materialized = {e.asset_key.path[-1] for e in again.get_asset_materialization_events()}
        assert materialized == {"b"}  # ... nor re-materialized: only the failed stage ran
        assert io_manager.read_stage("reexec", "b").num_rows == reexecution_project.ROWS
        b = io_manager.read_record("reexec", "b")
        assert b["upstream"]["a"]["data_version"] == io_manager.read_record("reexec", "a")["data_version"]
        messages = [e.user_message for e in instance.all_logs(again.run_id)]
        assert any("stage 'a' is current" in m for m in messages), messages

        # re-executing everything (not from failure) regenerates as asked
        llm.reset()
        everything = dg.execute_job(
            job, instance=instance, reexecution_options=dg.ReexecutionOptions(parent_run_id=again.run_id)
        )
        assert everything.success and llm.count("generation", "rx-a") == reexecution_project.ROWS


def test_reexecution_from_failure_generates_again_a_stage_whose_code_changed(tmp_path, llm, monkeypatch):
    """Published by the failed run, then edited: not current any more, so it and its downstream run again."""
    from dd_assets_tests.conftest import TEST_API_KEY_VALUE
    from dd_assets_tests.fixtures import reexecution_project
    from dd_assets_tests.llm_server import first_prompt_always

    monkeypatch.setenv("DD_ASSETS_TEST_ENDPOINT", llm.endpoint)
    monkeypatch.setenv("DD_ASSETS_BASE_DIR", str(tmp_path / "data"))
    monkeypatch.setenv(TEST_API_KEY_ENV, TEST_API_KEY_VALUE)
    io_manager = StageParquetIOManager(base_dir=str(tmp_path / "data"))
    job = dg.reconstructable(reexecution_project.job_before_edit)
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        fault = first_prompt_always(llm, (500, {"error": {"message": "server error"}}))
        llm.fault = lambda prompt: fault(prompt) if prompt.startswith("Second") else None
        first = dg.execute_job(job, instance=instance)
        assert not first.success
        before = io_manager.read_record("reexec", "a")["version"]

        llm.reset()
        again = dg.execute_job(
            dg.reconstructable(reexecution_project.job_after_edit),
            instance=instance,
            reexecution_options=dg.ReexecutionOptions.from_failure(first.run_id, instance),
        )
        assert again.success
        assert llm.count("generation", "rx-a") == reexecution_project.ROWS
        assert io_manager.read_record("reexec", "a")["version"] != before
        assert {e.asset_key.path[-1] for e in again.get_asset_materialization_events()} == {"a", "b"}
