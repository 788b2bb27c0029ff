"""A distributed executor on real servers: dagster-dask's executor on a Dask cluster the suite starts itself.

A ``dask scheduler`` and two ``dask worker`` processes run on this machine, each worker with its own temp
directory (no shared work folder); the workflow stores its stages on moto's S3 server. A branch and a join run
with every step in a worker, and give the rows of the in-process run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dd_assets import StageParquetIOManager
from dd_assets_tests.conftest import cli_environment
from dd_assets_tests.servers import S3_CREDENTIALS, DaskCluster

BIN = Path(sys.executable).parent
PROJECT = Path(__file__).parent / "fixtures" / "llm_project.py"
STAGES = ["topics", "write", "tag", "joined"]


@pytest.fixture
def fan_env(tmp_path, s3_server, s3_bucket, llm) -> dict[str, str]:
    seed = tmp_path / "topics.parquet"
    pq.write_table(pa.table({"topic": [f"topic-{i}" for i in range(24)]}), seed)
    return cli_environment(
        tmp_path,
        DD_ASSETS_BASE_DIR=f"s3://{s3_bucket}/prefix",
        DD_ASSETS_TEST_S3_ENDPOINT=s3_server.endpoint,
        DD_ASSETS_TEST_ENDPOINT=llm.endpoint,
        DD_ASSETS_TEST_KEY="sk-distributed-test",
        DD_ASSETS_TEST_FAN_SEED=str(seed),
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        **S3_CREDENTIALS,
    )


@pytest.fixture
def dask_cluster(tmp_path, fan_env):
    """Two workers that import the code location with the run's environment, as deployed workers would."""
    cluster = DaskCluster(tmp_path / "dask", fan_env, workers=2)
    yield cluster
    cluster.stop()


def _materialize(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    command = [str(BIN / "dagster"), "asset", "materialize", "-f", str(PROJECT), "--select", "group:fan"]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def _read_all(env: dict[str, str], s3_server) -> dict[str, pa.Table]:
    io_manager = StageParquetIOManager(base_dir=env["DD_ASSETS_BASE_DIR"], **s3_server.storage_options())
    return {stage: io_manager.read_stage("fan", stage).to_arrow() for stage in STAGES}


def test_a_branch_and_a_join_run_in_dask_workers_and_equal_the_in_process_run(
    tmp_path, fan_env, dask_cluster, s3_server, s3_bucket, monkeypatch
):
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    local_env = {**fan_env, "DD_ASSETS_BASE_DIR": f"s3://{s3_bucket}/in-process"}
    in_process = _materialize(local_env, tmp_path)
    assert in_process.returncode == 0, in_process.stderr[-3000:]

    distributed_env = {**fan_env, "DD_ASSETS_TEST_DASK_ADDRESS": dask_cluster.address}
    result = _materialize(distributed_env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    expected, got = _read_all(local_env, s3_server), _read_all(distributed_env, s3_server)
    for stage in STAGES:
        assert got[stage].equals(expected[stage]), stage
    assert got["joined"].num_rows == 24

    # every step ran in a worker process, not in the process that launched the run
    from distributed import Client

    with Client(dask_cluster.address) as client:
        worker_pids = set(client.run(lambda: __import__("os").getpid()).values())
    with dg.DagsterInstance.from_config(fan_env["DAGSTER_HOME"]) as instance:
        run = instance.get_runs(limit=1)[0]
        starts = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_START).records
        step_pids = {r.event_log_entry.step_key: r.event_log_entry.dagster_event.pid for r in starts}
    assert set(step_pids) == {f"fan__{stage}" for stage in STAGES}
    assert set(step_pids.values()) <= worker_pids, (step_pids, worker_pids)


def test_concurrent_partition_runs_on_one_cluster_each_generate_their_partition(
    tmp_path, s3_server, s3_bucket, llm, monkeypatch
):
    """Two partition runs of one job at once: dagster-dask alone runs only the first (dagster-io/dagster#21418)."""
    env = cli_environment(
        tmp_path,
        DD_ASSETS_BASE_DIR=f"s3://{s3_bucket}/prefix",
        DD_ASSETS_TEST_S3_ENDPOINT=s3_server.endpoint,
        DD_ASSETS_TEST_ENDPOINT=llm.endpoint,
        DD_ASSETS_TEST_KEY="sk-distributed-test",
        DD_ASSETS_TEST_ROWS="20",
        DD_ASSETS_TEST_PARTITIONS="2",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        **S3_CREDENTIALS,
    )
    seed = subprocess.run(
        [str(BIN / "dagster"), "asset", "materialize", "-f", str(PROJECT), "--select", "slow/seed"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert seed.returncode == 0, seed.stderr[-3000:]
    cluster = DaskCluster(tmp_path / "dask", env, workers=2)
    try:
        llm.reset()
        llm.delay_s = 0.1
        command = [str(BIN / "dagster"), "asset", "materialize", "-f", str(PROJECT), "--select", "slow/write"]
        runs = [
            subprocess.Popen(
                [*command, "--partition", key],
                env={**env, "DD_ASSETS_TEST_DASK_ADDRESS": cluster.address},
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for key in ["0", "1"]
        ]
        errors = [run.communicate(timeout=600)[1] for run in runs]
        assert [run.returncode for run in runs] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    finally:
        cluster.stop()
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    io_manager = StageParquetIOManager(base_dir=env["DD_ASSETS_BASE_DIR"], **s3_server.storage_options())
    records = [io_manager.read_record("slow", "write", key) for key in ["0", "1"]]
    assert [r and r["output_rows"] for r in records] == [10, 10]
    assert records[0]["run_id"] != records[1]["run_id"]
    assert llm.count("generation") == 20  # each partition's rows requested once, none skipped
