"""Object storage on a real S3-compatible server (moto's server mode, started by the suite on a free port).

Workflows run end to end with ``base_dir="s3://bucket/prefix"``: the same results as a local base_dir, readers
never see a half-published stage, a kill during upload keeps the previous version, one writer per stage holds
across machines (a lease taken with conditional writes), and a stage retried on another machine resumes the
batches the first one checkpointed to the store.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import data_designer.config as dd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dd_assets import Stage, StageParquetIOManager, Workflow
from dd_assets.storage.records import StageStorageError
from dd_assets.storage.stage_lock import StageBusyError, StageLockLostError
from dd_assets_tests.cli_runs import kill_when, materialize_cmd
from dd_assets_tests.conftest import cli_environment
from dd_assets_tests.helpers import expression_builder, materialize
from dd_assets_tests.servers import S3_CREDENTIALS

BIN = Path(sys.executable).parent
FIXTURES = Path(__file__).parent / "fixtures"
LEASE_S = 3.0  # the crash fixture's lease: a killed run's stage is free this long after it died


def _deterministic_workflow(seed_file: Path) -> Workflow:
    topics = dd.DataDesignerConfigBuilder()
    topics.with_seed_dataset(dd.LocalFileSeedSource(path=str(seed_file)))
    topics.add_column(dd.ExpressionColumnConfig(name="label", expr="{{ topic }}!"))
    return Workflow(
        name="det",
        stages=[
            Stage(name="topics", config=topics, partitions=2),
            Stage(
                name="upper",
                config=expression_builder("up", "{{ label | upper }}"),
                depends_on=["topics"],
                partitions=2,
            ),
            Stage(name="whole", config=expression_builder("size", "{{ up | length }}"), depends_on=["upper"]),
            Stage(name="side", config=expression_builder("s", "{{ topic }}-side"), depends_on=["topics"]),
            Stage(
                name="joined",
                config=expression_builder("j", "{{ s }}/{{ size }}"),
                depends_on=["whole", "side"],
                combine="zip",
            ),
        ],
    )


def _materialize_all(workflow: Workflow, io_manager: StageParquetIOManager, instance) -> None:
    for key in ["0", "1"]:
        assert materialize(
            workflow, io_manager, instance, selection=["det/topics", "det/upper"], partition_key=key
        ).success
    assert materialize(workflow, io_manager, instance, selection=["det/whole", "det/side", "det/joined"]).success


def test_a_workflow_on_s3_gives_the_results_of_a_local_base_dir(s3_server, s3_bucket, s3_io_manager, tmp_path):
    seed = tmp_path / "topics.parquet"
    pq.write_table(pa.table({"topic": [f"topic-{i}" for i in range(12)]}), seed)
    workflow = _deterministic_workflow(seed)
    local = StageParquetIOManager(base_dir=str(tmp_path / "local"))
    with dg.DagsterInstance.ephemeral() as instance:
        _materialize_all(workflow, local, instance)
    with dg.DagsterInstance.ephemeral() as instance:
        _materialize_all(workflow, s3_io_manager, instance)
    for stage in ["topics", "upper"]:
        for key in ["0", "1"]:
            assert (
                s3_io_manager.read_stage("det", stage, key)
                .to_arrow()
                .equals(local.read_stage("det", stage, key).to_arrow())
            )
    for stage in ["topics", "upper", "whole", "side", "joined"]:
        assert s3_io_manager.read_stage("det", stage).to_arrow().equals(local.read_stage("det", stage).to_arrow())
    assert s3_io_manager.read_stage("det", "joined").num_rows == 12

    keys = s3_server.keys(s3_bucket, "prefix/det/")
    assert "prefix/det/topics/partitions/0/stage.json" in keys and "prefix/det/joined/stage.json" in keys
    assert not [k for k in keys if k.endswith("/.lock") or "/.work/" in k]  # leases released, checkpoints removed
    assert not [k for k in keys if "/data/" in k]  # no `data` alias on object stores: readers follow stage.json


def _override(tmp_path: Path, version: int) -> str:
    folder = tmp_path / "overrides" / str(version)
    folder.mkdir(parents=True)
    for part in range(3):  # three files per version: a reader mixing versions would see several `v` values
        pq.write_table(pa.table({"v": [version] * 4, "part": [part] * 4}), folder / f"part-{part}.parquet")
    return str(folder)


def test_readers_never_see_a_half_published_stage(s3_io_manager, tmp_path):
    builder = dd.DataDesignerConfigBuilder()
    builder.add_column(
        dd.SamplerColumnConfig(
            name="v", sampler_type="uniform", params=dd.UniformSamplerParams(low=0, high=1), convert_to="int"
        )
    )
    workflow = Workflow(name="flip", stages=[Stage(name="a", config=builder, num_records=2)])
    overrides = [_override(tmp_path, v) for v in range(1, 7)]
    seen: list[int] = []
    gone: list[str] = []
    problems: list[str] = []
    done = threading.Event()

    def read_forever() -> None:
        while not done.is_set():
            try:
                table = s3_io_manager.read_stage("flip", "a").to_arrow()
            except (StageStorageError, FileNotFoundError) as exc:
                gone.append(str(exc))  # not published yet, or a version pruned under a slow reader
                continue
            values = set(table.column("v").to_pylist())
            if len(values) != 1 or table.num_rows != 12:
                problems.append(f"mixed read: values {values}, {table.num_rows} rows")
            else:
                seen.append(values.pop())

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        with dg.DagsterInstance.ephemeral() as instance:
            for override in overrides:
                config = {"ops": {"flip__a": {"config": {"output_override": override}}}}
                assert materialize(workflow, s3_io_manager, instance, run_config=config).success
    finally:
        done.set()
        reader.join()
    assert not problems, problems[:3]
    assert len(set(seen)) >= 3, (seen, gone[:3])  # the reader saw several versions, each whole
    assert seen == sorted(seen)  # and never an older one after a newer one


def _crash(tmp_path: Path, s3_server, base_dir: str, point: str) -> subprocess.CompletedProcess:
    env = cli_environment(
        tmp_path,
        CRASH_S3_ENDPOINT=s3_server.endpoint,
        CRASH_WORK_DIR=str(tmp_path / "work"),
        CRASH_LEASE_S=str(LEASE_S),
        **S3_CREDENTIALS,
    )
    return subprocess.run(
        [sys.executable, str(FIXTURES / "crash_at.py"), base_dir, point, "a"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_kill_during_upload_leaves_the_previous_version_readable(s3_server, s3_bucket, s3_io_manager, tmp_path):
    base_dir = s3_io_manager.base_dir
    assert _crash(tmp_path, s3_server, base_dir, "none").returncode == 0
    before = s3_io_manager.read_record("crash", "a")
    rows = s3_io_manager.read_stage("crash", "a").to_arrow()

    killed = _crash(tmp_path, s3_server, base_dir, "during_upload")
    assert killed.returncode == -signal.SIGKILL
    assert s3_io_manager.read_record("crash", "a") == before  # the commit never happened
    assert s3_io_manager.read_stage("crash", "a").to_arrow().equals(rows)  # the previous version, whole

    # the killed run's lease has expired by the time the next run starts (LEASE_S): it takes the stage over,
    # publishes and removes the orphan version folder
    time.sleep(LEASE_S)
    rerun = _crash(tmp_path, s3_server, base_dir, "none")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    record = s3_io_manager.read_record("crash", "a")
    versions = {k.split("/versions/")[1].split("/")[0] for k in s3_server.keys(s3_bucket, "prefix/crash/a/versions/")}
    assert versions == {record["version"], before["version"]}


def _machine(s3_server, s3_bucket: str, tmp_path: Path, name: str, **settings) -> StageParquetIOManager:
    """An IO manager as another machine has it: the same bucket, its own local disk."""
    return StageParquetIOManager(
        base_dir=f"s3://{s3_bucket}/prefix",
        local_work_dir=str(tmp_path / name),
        **s3_server.storage_options(),
        **settings,
    )


def test_one_writer_per_stage_across_machines(s3_server, s3_bucket, tmp_path):
    first = _machine(s3_server, s3_bucket, tmp_path, "machine-a").stage_lock("w", "s", run_id="run-a")
    second_machine = _machine(s3_server, s3_bucket, tmp_path, "machine-b")
    assert first.local.path != second_machine.lock_path("w", "s")  # no shared local lock: only the lease guards
    with first:
        with pytest.raises(StageBusyError, match="run run-a") as info:
            second_machine.stage_lock("w", "s", run_id="run-b").acquire()
        assert "workflow 'w', stage 's'" in str(info.value)
        # a partition is its own lock
        with second_machine.stage_lock("w", "s", run_id="run-b", partition="1"):
            pass
    with second_machine.stage_lock("w", "s", run_id="run-b") as second:
        second.check_held()


def test_a_waiting_writer_gets_the_stage_when_the_holder_releases_it(s3_server, s3_bucket, tmp_path):
    first = _machine(s3_server, s3_bucket, tmp_path, "machine-a").stage_lock("w", "s", run_id="run-a").acquire()
    waiting = _machine(s3_server, s3_bucket, tmp_path, "machine-b", lock_timeout_s=30).stage_lock("w", "s", "run-b")
    threading.Timer(1.5, first.release).start()
    started = time.monotonic()
    with waiting:
        assert time.monotonic() - started >= 1.0


def test_a_dead_holder_loses_the_stage_once_its_lease_expires(s3_server, s3_bucket, tmp_path):
    dead = _machine(s3_server, s3_bucket, tmp_path, "machine-a", lock_lease_s=1.5).stage_lock("w", "s", "run-a")
    dead.acquire()
    dead._stop.set()  # the holder's machine died: its lease is no longer renewed
    other = _machine(s3_server, s3_bucket, tmp_path, "machine-b", lock_timeout_s=10, lock_lease_s=1.5)
    with other.stage_lock("w", "s", run_id="run-b") as taker:
        assert taker.previous_owner["run"] == "run-a"
        with pytest.raises(StageLockLostError, match="no longer holds"):
            dead.check_held()  # a holder that comes back never commits
        dead.release()  # and never removes the lease it lost
        taker.check_held()


def test_a_live_holder_keeps_its_lease_past_the_lease_time(s3_server, s3_bucket, tmp_path):
    machine = _machine(s3_server, s3_bucket, tmp_path, "machine-a", lock_lease_s=1.5)
    with machine.stage_lock("w", "s", "run-a") as holder:
        time.sleep(3)  # twice the lease: renewed in the background
        with pytest.raises(StageBusyError):
            _machine(s3_server, s3_bucket, tmp_path, "machine-b").stage_lock("w", "s", "run-b").acquire()
        holder.check_held()


def _llm_env(tmp_path: Path, s3_server, llm, bucket: str, machine: str, **extra: str) -> dict[str, str]:
    return cli_environment(
        tmp_path,
        DD_ASSETS_BASE_DIR=f"s3://{bucket}/prefix",
        DD_ASSETS_TEST_S3_ENDPOINT=s3_server.endpoint,
        DD_ASSETS_TEST_WORK_DIR=str(tmp_path / machine),
        DD_ASSETS_TEST_ENDPOINT=llm.endpoint,
        DD_ASSETS_TEST_KEY="sk-object-storage-test",
        **S3_CREDENTIALS,
        **extra,
    )


def test_a_partition_retried_on_another_machine_sends_only_its_unfinished_batches(s3_server, s3_bucket, tmp_path, llm):
    settings = {
        "DD_ASSETS_TEST_ROWS": "80",
        "DD_ASSETS_TEST_BUFFER": "5",
        "DD_ASSETS_TEST_PARTITIONS": "2",
        "DD_ASSETS_TEST_LEASE_S": str(LEASE_S),
        "DD_ASSETS_TEST_LOCK_WAIT": "60",  # the retry waits for the dead machine's lease to expire
    }
    env_a = _llm_env(tmp_path, s3_server, llm, s3_bucket, "machine-a", **settings)
    env_b = _llm_env(tmp_path, s3_server, llm, s3_bucket, "machine-b", **settings)
    seed = subprocess.run(materialize_cmd("slow/seed"), env=env_a, cwd=tmp_path, capture_output=True, text=True)
    assert seed.returncode == 0, seed.stderr[-3000:]

    llm.reset()
    llm.delay_s = 0.15
    prefix = "prefix/slow/write/partitions/1/.work/"

    def checkpointed() -> int:
        return len([k for k in s3_server.keys(s3_bucket, prefix) if "/parquet-files/batch_" in k])

    # machine A dies once three batches are checkpointed
    kill_when(materialize_cmd("slow/write", "--partition", "1"), env_a, tmp_path, lambda: checkpointed() >= 3)
    batches = checkpointed()
    assert 3 <= batches < 8, batches
    sent_before = llm.count("generation")

    llm.reset()
    retry = subprocess.run(
        materialize_cmd("slow/write", "--partition", "1"), env=env_b, cwd=tmp_path, capture_output=True, text=True
    )
    assert retry.returncode == 0, retry.stderr[-3000:]
    record = json.loads(
        StageParquetIOManager(base_dir=f"s3://{s3_bucket}/prefix", **s3_server.storage_options())
        .stage_dir("slow", "write", "1")
        .joinpath("stage.json")
        .read_text()
    )
    assert record["output_rows"] == 40 and record["resumed"] is True and record["partition"] == "1", "\n".join(
        line[-300:] for line in retry.stderr.splitlines() if "resum" in line or "restor" in line or "fresh" in line
    )
    assert "restored" in retry.stderr and f"{batches} finished batch(es)" in retry.stderr
    # machine B sent only the requests of the batches machine A had not checkpointed
    assert 40 - 5 * batches <= llm.count("generation") <= 40 - 5 * batches + 5, (batches, sent_before)
    assert "is being materialized by another run" not in retry.stderr
    assert not [k for k in s3_server.keys(s3_bucket, prefix)]  # checkpoints removed once published
