"""Faults: a killed run resumes, concurrent runs never corrupt a stage, secrets stay secret, storage faults are clear.

These run the real dagster CLI in subprocesses against the local test LLM server.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import data_designer.config as dd
import pandas as pd
import pytest

from dd_assets import Stage, StageParquetIOManager, Workflow
from dd_assets_tests.cli_runs import kill_when, llm_env, materialize_cmd, run
from dd_assets_tests.helpers import expression_builder, finished_batches, materialize, sampler_builder


def _record(tmp_path: Path, stage: str) -> dict | None:
    path = tmp_path / "data" / "slow" / stage / "stage.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_killed_run_resumes_only_the_unfinished_batches(tmp_path, llm):
    env = llm_env(tmp_path, llm, DD_ASSETS_TEST_ROWS="40", DD_ASSETS_TEST_BUFFER="5")
    assert run("slow/seed", env, tmp_path).returncode == 0
    llm.reset()
    llm.delay_s = 0.15
    staging = tmp_path / "data" / "slow" / "write" / ".staging"
    kill_when(materialize_cmd("slow/write"), env, tmp_path, lambda: finished_batches(staging) >= 3)
    finished = finished_batches(staging)
    assert 3 <= finished < 8, finished
    assert _record(tmp_path, "write") is None  # nothing published by the killed run

    llm.reset()
    result = run("slow/write", env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    record = _record(tmp_path, "write")
    assert record["output_rows"] == 40 and record["resumed"] is True
    # only the unfinished batches were requested again (a batch in flight when killed is redone)
    assert llm.count("generation") <= 40 - 5 * finished + 5
    assert llm.count("generation") >= 40 - 5 * finished
    assert llm.count("health_check") <= 1
    assert not list(staging.glob("*/artifacts"))


def test_two_runs_of_one_stage_at_once_leave_one_complete_output(tmp_path, llm):
    env = llm_env(tmp_path, llm, DD_ASSETS_TEST_ROWS="12")
    assert run("slow/seed", env, tmp_path).returncode == 0
    llm.delay_s = 0.1
    procs = [
        subprocess.Popen(
            materialize_cmd("slow/write"),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], outputs
    loser = outputs[codes.index(1)]
    assert "workflow 'slow', stage 'write' is being materialized by another run (run " in loser[0] + loser[1]
    record = _record(tmp_path, "write")
    frame = pd.concat(pd.read_parquet(tmp_path / "data" / "slow" / "write" / f) for f in record["files"])
    assert len(frame) == record["output_rows"] == 12
    assert sorted(p.name for p in (tmp_path / "data" / "slow" / "write" / "data").iterdir()) == sorted(
        Path(f).name for f in record["files"]
    )


def test_a_waiting_run_runs_after_the_first(tmp_path, llm):
    env = llm_env(tmp_path, llm, DD_ASSETS_TEST_ROWS="6", DD_ASSETS_TEST_LOCK_WAIT="300")
    assert run("slow/seed", env, tmp_path).returncode == 0
    llm.delay_s = 0.1
    procs = [
        subprocess.Popen(
            materialize_cmd("slow/write"), env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    assert _record(tmp_path, "write")["output_rows"] == 6


def test_a_reader_of_the_previous_version_survives_a_publish(io_manager, instance):
    wf = Workflow(name="readers", stages=[Stage(name="a", config=sampler_builder(), num_records=7)])
    materialize(wf, io_manager, instance)
    handle = io_manager.read_stage("readers", "a")  # a reader holding version 1
    materialize(wf, io_manager, instance)  # version 2 published
    assert handle.record["version"] != io_manager.read_record("readers", "a")["version"]
    assert len(handle.to_pandas()) == 7  # the previous version's folder is kept for its readers ...
    materialize(wf, io_manager, instance)  # ... until the version after next is published
    assert not any(f.exists() for f in handle.files)


@pytest.fixture
def small_disk(tmp_path, request):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    size = getattr(request, "param", "1m")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_fails_clearly_frees_what_it_wrote_and_later_runs_succeed(small_disk, instance):
    io_manager = StageParquetIOManager(base_dir=str(small_disk / "data"))
    wf = Workflow(name="disk", stages=[Stage(name="a", config=sampler_builder(), num_records=20)])
    materialize(wf, io_manager, instance)
    before = io_manager.read_stage("disk", "a").to_pandas()
    uuid_builder = dd.DataDesignerConfigBuilder()
    for name in ("id_a", "id_b"):
        uuid_builder.add_column(dd.SamplerColumnConfig(name=name, sampler_type="uuid", params=dd.UUIDSamplerParams()))
    big = Workflow(name="disk", stages=[Stage(name="a", config=uuid_builder, num_records=40000)])
    result = materialize(big, io_manager, instance, raise_on_error=False)
    assert not result.success
    message = result.failure_data_for_node("disk__a").error.message
    assert "workflow 'disk', stage 'a'" in message and "No space left on device" in message
    assert "Freed" in message and "it made no model requests" in message
    pd.testing.assert_frame_equal(io_manager.read_stage("disk", "a").to_pandas(), before)
    staging = small_disk / "data" / "disk" / "a" / ".staging"
    assert not [p for p in staging.iterdir() if p.is_dir()]  # the failed run's work folder is gone ...
    assert materialize(wf, io_manager, instance).success  # ... so the disk has room for the next run


@pytest.mark.parametrize("small_disk", ["320k"], indirect=True)
def test_full_disk_keeps_paid_batches_and_names_their_folder(small_disk, instance, llm):
    from dd_assets import DataDesignerResource
    from dd_assets_tests.helpers import llm_builder

    io_manager = StageParquetIOManager(base_dir=str(small_disk / "data"))
    writer = llm_builder("text", "Write {{ n }}")
    for index in range(6):
        writer.add_column(
            dd.SamplerColumnConfig(name=f"pad{index}", sampler_type="uuid", params=dd.UUIDSamplerParams())
        )
    wf = Workflow(
        name="paid",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=1000),
            Stage(name="write", config=writer, depends_on=["seed"]),
        ],
    )
    resource = DataDesignerResource(
        model_providers=[{"name": "test_llm", "endpoint": llm.endpoint, "api_key": "DD_ASSETS_TEST_API_KEY"}],
        run_config={"buffer_size": 100},
    )
    result = materialize(wf, io_manager, instance, resource=resource, raise_on_error=False)
    assert not result.success and llm.count("generation") > 0
    message = result.failure_data_for_node("paid__write").error.message
    assert "No space left on device" in message
    assert "of finished, paid-for batches in" in message and "delete that folder to free the space" in message


def test_read_only_base_dir_fails_clearly_and_keeps_the_output(small_disk, instance):
    io_manager = StageParquetIOManager(base_dir=str(small_disk / "data"))
    wf = Workflow(name="ro", stages=[Stage(name="a", config=sampler_builder(), num_records=5)])
    materialize(wf, io_manager, instance)
    before = io_manager.read_stage("ro", "a").to_pandas()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = materialize(wf, io_manager, instance, raise_on_error=False)
    assert not result.success
    message = result.failure_data_for_node("ro__a").error.message
    assert "workflow 'ro', stage 'a'" in message and "Read-only file system" in message
    pd.testing.assert_frame_equal(io_manager.read_stage("ro", "a").to_pandas(), before)


def test_deleted_upstream_directory_fails_clearly_and_keeps_downstream(io_manager, instance):
    import shutil

    import dagster as dg

    wf = Workflow(
        name="gone",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=5),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"]),
        ],
    )
    materialize(wf, io_manager, instance)
    before = io_manager.read_stage("gone", "b").to_pandas()
    shutil.rmtree(Path(io_manager.base_dir) / "gone" / "a")
    result = materialize(wf, io_manager, instance, selection=[dg.AssetKey(["gone", "b"])], raise_on_error=False)
    assert not result.success
    events = [e for e in result.all_events if e.is_failure]
    text = " ".join(str(e.event_specific_data) for e in events)
    assert "workflow 'gone', stage 'a': no published output" in text and "materialize it first" in text
    pd.testing.assert_frame_equal(io_manager.read_stage("gone", "b").to_pandas(), before)
    assert materialize(wf, io_manager, instance).success  # rematerializing the workflow repairs it


def test_a_publish_removes_work_directories_of_superseded_work(io_manager, instance):
    wf = Workflow(name="tidy", stages=[Stage(name="a", config=sampler_builder(), num_records=4)])
    stale = Path(io_manager.base_dir) / "tidy" / "a" / ".staging" / "0123456789abcdef" / "artifacts"
    stale.mkdir(parents=True)
    materialize(wf, io_manager, instance)
    assert not any((Path(io_manager.base_dir) / "tidy" / "a" / ".staging").iterdir())


def test_output_override_is_copied_so_later_edits_do_not_change_published_data(io_manager, instance, tmp_path):
    override = tmp_path / "fixed.parquet"
    pd.DataFrame({"n": [1, 2], "color": ["red", "blue"]}).to_parquet(override)
    wf = Workflow(name="copy", stages=[Stage(name="a", config=sampler_builder(), num_records=3)])
    materialize(
        wf, io_manager, instance, run_config={"ops": {"copy__a": {"config": {"output_override": str(override)}}}}
    )
    published = Path(io_manager.base_dir) / "copy" / "a" / io_manager.read_record("copy", "a")["files"][0]
    assert published.stat().st_ino != override.stat().st_ino
    pd.DataFrame({"n": [9], "color": ["x"]}).to_parquet(override)
    assert io_manager.read_stage("copy", "a").num_rows == 2
