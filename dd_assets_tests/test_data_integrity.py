"""Never mix, lose or wedge: resume keyed by generation inputs, clean publishes, Dagster and storage in agreement.

Each test reproduces a way a stage used to mix inputs, leave mixed or orphaned files, or get stuck.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import data_designer.config as dd
import pandas as pd
import pyarrow.parquet as pq
import pytest
from data_designer.config.seed import IndexRange, PartitionBlock

from dd_assets import DataDesignerStageTranslator, Stage, StageParquetIOManager, Workflow, build_workflow_definitions
from dd_assets.storage.dagster_agreement import VERSION_METADATA_KEY, reconcile
from dd_assets_tests.cli_runs import kill_when, llm_env, materialize_cmd, run
from dd_assets_tests.helpers import (
    FailOnce,
    expression_builder,
    finished_batches,
    materialize,
    metadata_of,
    sampler_builder,
    seeded_llm_workflow,
)
from dd_assets_tests.test_cli_e2e import _env

FIXTURES = Path(__file__).parent / "fixtures"
WRITE = dg.AssetKey(["keys", "write"])


def _llm_workflow(**write_fields) -> Workflow:
    return seeded_llm_workflow("keys", 8, prompt="Write {{ color }} {{ n }}", **write_fields)


def _write_logs(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(e.user_message for e in instance.all_logs(result.run_id) if e.user_message)


# --- resume never mixes inputs ------------------------------------------------------------------------------


def test_an_edited_seed_file_is_never_resumed_into_old_rows(tmp_path, llm):
    seed_file = tmp_path / "topics.parquet"
    pd.DataFrame({"topic": [f"old-{i}" for i in range(40)]}).to_parquet(seed_file)
    env = llm_env(tmp_path, llm, DD_ASSETS_TEST_BUFFER="5", DD_ASSETS_TEST_SEED_FILE=str(seed_file))
    llm.delay_s = 0.15
    staging = tmp_path / "data" / "seeded" / "write" / ".staging"
    kill_when(materialize_cmd("seeded/write"), env, tmp_path, lambda: finished_batches(staging) >= 3)
    assert finished_batches(staging) >= 3  # paid batches of the old seed

    pd.DataFrame({"topic": [f"new-{i}" for i in range(40)]}).to_parquet(seed_file)  # the user edits the seed
    llm.reset()
    result = run("seeded/write", env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "data" / "seeded" / "write" / "stage.json").read_text())
    topics = pq.read_table(tmp_path / "data" / "seeded" / "write" / "data").column("topic").to_pylist()
    assert sorted(topics) == sorted(f"new-{i}" for i in range(40))  # no old row
    assert record["resumed"] is False and llm.count("generation") == 40
    assert "starting fresh" in result.stdout + result.stderr
    assert "the seed data (upstream output or seed file content)" in result.stdout + result.stderr


def test_changing_output_settings_keeps_the_finished_batches(io_manager, instance, llm, llm_resource):
    callback = FailOnce()
    first = materialize(
        _llm_workflow(on_success=callback, on_success_version="1"),
        io_manager,
        instance,
        resource=llm_resource,
        raise_on_error=False,
    )
    assert not first.success and llm.count("generation") == 8
    llm.reset()
    # output processors, output, on_success and allow_empty act after generation: the batches are reused
    changed = _llm_workflow(
        on_success=callback,
        on_success_version="2",
        allow_empty=True,
        output_processors=[dd.DropColumnsProcessorConfig(name="drop_color", column_names=["color"])],
    )
    second = materialize(changed, io_manager, instance, resource=llm_resource, selection=[WRITE])
    assert llm.count("generation") == 0
    assert metadata_of(second, ["keys", "write"])["dd_assets/resumed"] is True
    assert io_manager.read_stage("keys", "write").num_rows == 8


def test_a_changed_input_starts_fresh_and_says_why(io_manager, instance, llm, llm_resource):
    failed = materialize(
        _llm_workflow(on_success=FailOnce(), on_success_version="1"),
        io_manager,
        instance,
        resource=llm_resource,
        raise_on_error=False,
    )
    assert not failed.success
    llm.reset()
    result = materialize(_llm_workflow(num_records=6), io_manager, instance, resource=llm_resource, selection=[WRITE])
    assert llm.count("generation") == 6
    assert metadata_of(result, ["keys", "write"])["dd_assets/resumed"] is False
    logs = _write_logs(instance, result)
    assert "workflow 'keys', stage 'write': starting fresh: 1 finished batch(es) in" in logs
    assert "num_records (8 -> 6) changed) and are not reused" in logs


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (PartitionBlock(index=1, num_partitions=2), list(range(20, 40))),
        (IndexRange(start=5, end=14), list(range(5, 15))),
    ],
)
def test_selection_without_num_records_takes_each_selected_row_once(
    io_manager, instance, tmp_path, selection, expected
):
    seed_file = tmp_path / "rows.parquet"
    pd.DataFrame({"i": list(range(40))}).to_parquet(seed_file)
    wf = Workflow(
        name="block",
        stages=[
            Stage(
                name="rows",
                config=expression_builder("j", "{{ i }}").with_seed_dataset(
                    dd.LocalFileSeedSource(path=str(seed_file))
                ),
            ),
            Stage(
                name="half",
                config=expression_builder("k", "{{ i }}"),
                depends_on=["rows"],
                selection_strategy=selection,
            ),
        ],
    )
    result = materialize(wf, io_manager, instance)
    half = io_manager.read_stage("block", "half").to_pandas()
    assert list(half["i"]) == expected  # every selected row once: no repeats, no extra model calls
    assert metadata_of(result, ["block", "half"])["dd_assets/num_records_requested"] == len(expected)


# --- publish leaves nothing mixed or wedged ------------------------------------------------------------------


def _crash(tmp_path: Path, point: str, select: str = "a") -> subprocess.CompletedProcess:
    env = _env(tmp_path)
    return subprocess.run(
        [sys.executable, str(FIXTURES / "crash_at.py"), str(tmp_path / "data"), point, select],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _instance(tmp_path: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(tmp_path / "dagster_home"))


def test_a_publish_killed_before_its_commit_leaves_no_file_beside_the_current_version(tmp_path):
    assert _crash(tmp_path, "none").returncode == 0
    stage_dir = tmp_path / "data" / "crash" / "a"
    before = json.loads((stage_dir / "stage.json").read_text())

    killed = _crash(tmp_path, "before_commit")
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((stage_dir / "stage.json").read_text()) == before
    with _instance(tmp_path) as instance:
        killed_run = next(r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.STARTED)
    # the folder readers are pointed at holds exactly the committed version: reading it is not a mix
    assert sorted(p.name for p in (stage_dir / "data").iterdir()) == sorted(Path(f).name for f in before["files"])
    assert len(pd.read_parquet(stage_dir / "data")) == before["output_rows"]
    orphans = [p.name for p in (stage_dir / "versions").iterdir() if p.name != before["version"]]
    assert len(orphans) == 1  # the killed attempt's folder, never referenced ...

    assert _crash(tmp_path, "none").returncode == 0
    after = json.loads((stage_dir / "stage.json").read_text())
    with _instance(tmp_path) as instance:  # the next run of the stage saw the dead holder of its lock
        assert instance.get_run_by_id(killed_run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert sorted(p.name for p in (stage_dir / "versions").iterdir()) == sorted([before["version"], after["version"]])
    assert orphans[0] not in {before["version"], after["version"]}  # ... and removed by the next publish


def test_a_publish_killed_after_its_commit_is_recorded_in_dagster_when_next_read(tmp_path):
    assert _crash(tmp_path, "none").returncode == 0
    killed = _crash(tmp_path, "after_commit")
    assert killed.returncode == -signal.SIGKILL
    record = json.loads((tmp_path / "data" / "crash" / "a" / "stage.json").read_text())
    key = dg.AssetKey(["crash", "a"])
    with _instance(tmp_path) as instance:
        latest = instance.get_latest_materialization_event(key).asset_materialization
        assert latest.metadata[VERSION_METADATA_KEY].value != record["version"]  # storage is ahead of Dagster

    with _instance(tmp_path) as instance:
        killed_run = instance.get_run_by_id(record["run_id"])
        assert killed_run.status == dg.DagsterRunStatus.STARTED  # its process is gone, the run looks alive

    # reading the stage (here: materializing its downstream) makes Dagster record the committed version
    assert _crash(tmp_path, "none", select="b").returncode == 0
    with _instance(tmp_path) as instance:
        assert instance.get_run_by_id(record["run_id"]).status == dg.DagsterRunStatus.FAILURE
        latest = instance.get_latest_materialization_event(key).asset_materialization
        assert latest.metadata[VERSION_METADATA_KEY].value == record["version"]
        assert latest.metadata["dd_assets/recovered_from_run"].value == record["run_id"]
        assert latest.tags["dagster/data_version"] == record["data_version"]
        b_record = json.loads((tmp_path / "data" / "crash" / "b" / "stage.json").read_text())
        assert b_record["upstream"]["a"]["data_version"] == record["data_version"]


def test_a_rerun_of_a_stage_killed_after_its_commit_records_it_first(tmp_path):
    assert _crash(tmp_path, "after_commit").returncode == -signal.SIGKILL  # killed on its very first publish
    record = json.loads((tmp_path / "data" / "crash" / "a" / "stage.json").read_text())
    with _instance(tmp_path) as instance:
        assert instance.get_latest_materialization_event(dg.AssetKey(["crash", "a"])) is None
    rerun = _crash(tmp_path, "none")
    assert rerun.returncode == 0
    assert f"version {record['version']} was committed by run {record['run_id']}" in rerun.stdout + rerun.stderr
    with _instance(tmp_path) as instance:
        events = instance.fetch_materializations(dg.AssetKey(["crash", "a"]), limit=10).records
        versions = [e.asset_materialization.metadata[VERSION_METADATA_KEY].value for e in events]
        assert record["version"] in versions and len(versions) == 2


@pytest.mark.parametrize("torn", [b'{"files": ["versions/x/part-0', b"\xff\xfe{}", b"[]"])
def test_an_unreadable_stage_record_is_set_aside_and_rematerializing_repairs_it(io_manager, instance, torn):
    wf = Workflow(
        name="torn",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=4),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"]),
        ],
    )
    materialize(wf, io_manager, instance)
    stage_dir = Path(io_manager.base_dir) / "torn" / "a"
    (stage_dir / "stage.json").write_bytes(torn)  # torn by a crash, a full disk or a bad copy

    reader = materialize(wf, io_manager, instance, selection=[dg.AssetKey(["torn", "b"])], raise_on_error=False)
    assert not reader.success
    text = " ".join(str(e.event_specific_data) for e in reader.all_events if e.is_failure)
    assert "workflow 'torn', stage 'a'" in text and "is unreadable" in text and "rematerialize the stage" in text

    result = materialize(wf, io_manager, instance)
    assert result.success
    assert "moved it to" in _write_logs(instance, result)
    assert list(stage_dir.glob("stage.json.unreadable-*"))  # kept for inspection
    assert io_manager.read_stage("torn", "a").num_rows == 4


class _PrefixedKeys(DataDesignerStageTranslator):
    def get_asset_key(self, workflow, stage):
        return dg.AssetKey(["team", workflow.name, stage.name])


def test_a_translator_that_changes_asset_keys_publishes_and_releases_the_lock(io_manager, instance):
    wf = Workflow(
        name="renamed",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=3),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"]),
        ],
    )
    defs = build_workflow_definitions(wf, io_manager=io_manager, translator=_PrefixedKeys())
    for _ in range(2):  # the second run proves the first released its locks
        result = dg.materialize(defs.assets, instance=instance, resources=defs.resources)
        assert result.success
    assert io_manager.read_stage("renamed", "b").num_rows == 3
    uri = metadata_of(result, ["team", "renamed", "b"])["dagster/uri"]
    assert uri.startswith(str(Path(io_manager.base_dir) / "renamed" / "b" / "versions"))


def test_a_run_whose_stage_folder_is_deleted_under_it_never_commits(io_manager, tmp_path):
    stage_dir = Path(io_manager.base_dir) / "pulled" / "a"
    outcome = {}

    def other_run() -> None:
        with dg.DagsterInstance.ephemeral() as other:
            wf = Workflow(name="pulled", stages=[Stage(name="a", config=sampler_builder(), num_records=9)])
            outcome["other"] = materialize(wf, io_manager, other).success

    def delete_folder_and_let_another_run_publish(artifacts: Path) -> Path:
        kept = tmp_path / "first-run-output"
        kept.mkdir()
        for file in (artifacts / "parquet-files").glob("*.parquet"):
            (kept / file.name).write_bytes(file.read_bytes())
        import shutil

        shutil.rmtree(stage_dir)  # an operator deletes the stage while this run holds its lock ...
        thread = threading.Thread(target=other_run)  # ... and another run takes a new lock and publishes
        thread.start()
        thread.join()
        return kept

    first = Workflow(
        name="pulled",
        stages=[
            Stage(
                name="a", config=sampler_builder(), num_records=4, on_success=delete_folder_and_let_another_run_publish
            )
        ],
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(first, io_manager, instance, raise_on_error=False)
    assert outcome["other"] is True
    assert not result.success
    text = " ".join(str(e.event_specific_data) for e in result.all_events if e.is_failure)
    assert "lock file" in text and "was deleted or replaced while this run held it" in text
    record = io_manager.read_record("pulled", "a")
    assert record["output_rows"] == 9  # the other run's output stands, whole
    assert io_manager.read_stage("pulled", "a").num_rows == 9


# --- faults recover --------------------------------------------------------------------------------------------


def test_work_folders_of_url_base_dirs_are_kept_apart(tmp_path, instance):
    work = str(tmp_path / "work")
    one = StageParquetIOManager(base_dir="memory://bucket-one/project", local_work_dir=work)
    two = StageParquetIOManager(base_dir="memory://bucket-two/project", local_work_dir=work)
    assert one.work_root("wf", "a") != two.work_root("wf", "a")

    def stage(**fields) -> Workflow:
        return Workflow(name="wf", stages=[Stage(name="a", config=sampler_builder(), num_records=5, **fields)])

    interrupted = stage(on_success=FailOnce(), on_success_version="1")
    assert not materialize(interrupted, two, instance, raise_on_error=False).success
    kept = list(two.work_root("wf", "a").glob("*/artifacts/metadata.json"))
    assert kept  # bucket two's finished batches wait for its next run
    assert materialize(stage(), one, instance).success  # bucket one publishes and tidies its own work folders
    assert all(path.exists() for path in kept)  # ... never bucket two's
    resumed = materialize(interrupted, two, instance)
    assert metadata_of(resumed, ["wf", "a"])["dd_assets/resumed"] is True


def test_a_wiped_asset_history_is_not_mistaken_for_a_killed_commit(io_manager, instance):
    wf = Workflow(
        name="wiped",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=3),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"]),
        ],
    )
    materialize(wf, io_manager, instance)
    instance.wipe_assets([dg.AssetKey(["wiped", "a"])])
    result = materialize(wf, io_manager, instance, selection=[dg.AssetKey(["wiped", "b"])])
    assert result.success
    assert instance.get_latest_materialization_event(dg.AssetKey(["wiped", "a"])) is None  # nothing "recovered"


def test_a_reader_checking_a_stage_never_fails_a_writer_arriving_meanwhile(io_manager):
    reader = io_manager.stage_lock("wf", "a", run_id="reader", reader=True)
    writer = io_manager.stage_lock("wf", "a", run_id="some-run")  # lock_timeout_s=0: fail at once if busy
    reader.acquire()
    release_later = threading.Timer(0.5, reader.release)
    release_later.start()
    started = time.monotonic()
    with writer:  # waits the reader out instead of failing
        assert time.monotonic() - started >= 0.4
    release_later.join()


# --- a join never combines two versions of a shared upstream ------------------------------------------------------


def _diamond() -> Workflow:
    """seed -> a (drops the seed's columns) and seed -> bk -> bd; jd zips a with bd: the branches share no column."""
    drop = [dd.DropColumnsProcessorConfig(name="drop_seed", column_names=["n", "color"])]
    return Workflow(
        name="diamond",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=6),
            Stage(name="a", config=expression_builder("a", "{{ n }}"), depends_on=["seed"], output_processors=drop),
            Stage(name="bk", config=expression_builder("bk", "{{ n }}"), depends_on=["seed"]),
            Stage(name="bd", config=expression_builder("bd", "{{ bk }}"), depends_on=["bk"]),
            Stage(name="jd", config=expression_builder("j", "{{ a }}-{{ bd }}"), depends_on=["a", "bd"], combine="zip"),
        ],
    )


def test_a_join_of_branches_built_from_two_versions_of_a_shared_upstream_fails(
    in_both_execution_modes, io_manager, instance
):
    from dd_assets_tests.helpers import failure_message

    workflow = _diamond()
    materialize(workflow, io_manager, instance)
    seed_v1 = io_manager.read_record("diamond", "seed")["data_version"]
    published_jd = io_manager.read_record("diamond", "jd")
    assert published_jd["lineage"]["diamond/seed"] == seed_v1
    # another run re-materializes the shared upstream and one branch; branch `a` still derives from seed v1
    materialize(workflow, io_manager, instance, selection=["diamond/seed", "diamond/bk", "diamond/bd"])
    seed_v2 = io_manager.read_record("diamond", "seed")["data_version"]
    assert seed_v2 != seed_v1

    result = materialize(workflow, io_manager, instance, selection=["diamond/jd"], raise_on_error=False)
    assert not result.success
    message = failure_message(result, "diamond", "jd")
    assert "stage 'jd'" in message and "different versions of 'diamond/seed'" in message
    assert f"version {seed_v1} via 'a'" in message and f"version {seed_v2} via 'bd'" in message
    assert io_manager.read_record("diamond", "jd")["version"] == published_jd["version"]  # nothing published

    materialize(workflow, io_manager, instance, selection=["diamond/a", "diamond/jd"])  # rebuild the old branch
    rows = io_manager.read_stage("diamond", "jd").to_pandas()
    seed = io_manager.read_stage("diamond", "seed").to_pandas()
    assert list(rows["a"].astype(str)) == list(seed["n"].astype(str)) == list(rows["bd"].astype(str))
    assert io_manager.read_record("diamond", "jd")["lineage"]["diamond/seed"] == seed_v2


def test_a_join_in_one_concurrent_run_reads_one_version_of_its_shared_upstream(io_manager, instance):
    result = materialize(_diamond(), io_manager, instance, execution="concurrent")
    assert result.success
    record = io_manager.read_record("diamond", "jd")
    assert record["lineage"] == {
        "diamond/seed": io_manager.read_record("diamond", "seed")["data_version"],
        "diamond/a": io_manager.read_record("diamond", "a")["data_version"],
        "diamond/bk": io_manager.read_record("diamond", "bk")["data_version"],
        "diamond/bd": io_manager.read_record("diamond", "bd")["data_version"],
    }


def test_an_edited_in_memory_dataframe_seed_is_never_resumed_into_old_rows(io_manager, instance):
    from data_designer.config.seed_source_dataframe import DataFrameSeedSource

    def workflow(values: list[str], failing) -> Workflow:
        builder = expression_builder("copy", "{{ topic }}!")
        builder.with_seed_dataset(DataFrameSeedSource(df=pd.DataFrame({"topic": values})))
        return Workflow(
            name="frame",
            stages=[Stage(name="s", config=builder, on_success=failing, on_success_version="1")],
        )

    failing = FailOnce()
    materialize(workflow([f"old-{i}" for i in range(6)], failing), io_manager, instance, raise_on_error=False)
    assert failing.calls == 1  # generated, then stopped before publishing: its batches wait to be resumed
    result = materialize(workflow([f"new-{i}" for i in range(6)], failing), io_manager, instance)
    assert metadata_of(result, ["frame", "s"])["dd_assets/resumed"] is False
    assert list(io_manager.read_stage("frame", "s").to_pandas()["copy"]) == [f"new-{i}!" for i in range(6)]


def test_a_seed_directory_is_fingerprinted_by_its_files():
    from data_designer.config.seed_source import DirectorySeedSource

    from dd_assets.spec.versioning import own_seed_fingerprint

    def fingerprint(root) -> str:
        builder = expression_builder("x", "1")
        builder.with_seed_dataset(DirectorySeedSource(path=str(root), file_pattern="*.txt"))
        return own_seed_fingerprint(builder)

    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "nested").mkdir()
        (root / "nested" / "a.txt").write_text("one")
        before = fingerprint(root)
        assert fingerprint(root) == before
        (root / "nested" / "a.txt").write_text("two")
        assert fingerprint(root) != before


def test_a_kill_between_the_commit_and_the_data_link_switch_is_repaired_when_next_read_or_run(tmp_path):
    stage_dir = tmp_path / "data" / "crash" / "a"
    assert _crash(tmp_path, "none").returncode == 0
    previous = json.loads((stage_dir / "stage.json").read_text())["version"]
    assert _crash(tmp_path, "after_commit").returncode == -signal.SIGKILL
    committed = json.loads((stage_dir / "stage.json").read_text())["version"]
    assert Path(os.readlink(stage_dir / "data")).name == previous != committed  # the state the kill leaves

    assert _crash(tmp_path, "none", select="b").returncode == 0  # a reader of the stage repairs the link
    assert Path(os.readlink(stage_dir / "data")).name == committed
    assert sorted(p.name for p in (stage_dir / "data").iterdir()) == sorted(
        Path(f).name for f in json.loads((stage_dir / "stage.json").read_text())["files"]
    )

    # the same state again, repaired by the next run of the stage itself before it publishes
    (stage_dir / ".data-tmp").symlink_to(f"versions/{previous}")
    os.replace(stage_dir / ".data-tmp", stage_dir / "data")
    io_manager = StageParquetIOManager(base_dir=str(tmp_path / "data"))
    with _instance(tmp_path) as instance:
        lock = io_manager.stage_lock("crash", "a", run_id="check")
        with lock:
            message = reconcile(io_manager.store, "crash", "a", dg.AssetKey(["crash", "a"]), instance, lock)
    assert f"pointed it at {committed}" in message and Path(os.readlink(stage_dir / "data")).name == committed


def test_a_data_folder_of_an_older_layout_is_kept_and_named_in_the_warning(io_manager, instance, caplog):
    stage_dir = Path(io_manager.base_dir) / "legacy" / "s"
    (stage_dir / "data").mkdir(parents=True)
    (stage_dir / "data" / "old.parquet").write_bytes(b"not ours to delete")
    workflow = Workflow(name="legacy", stages=[Stage(name="s", config=sampler_builder(), num_records=3)])

    result = materialize(workflow, io_manager, instance)

    assert result.success  # published: stage.json commits the version, readers of stage.json and dagster/uri follow
    record = json.loads((stage_dir / "stage.json").read_text())
    assert (stage_dir / "versions" / record["version"]).is_dir()
    assert (stage_dir / "data" / "old.parquet").read_bytes() == b"not ours to delete"
    logs = " ".join(r.getMessage() for r in caplog.records)
    assert f"{stage_dir / 'data'} is a folder" in logs and "move it away" in logs
