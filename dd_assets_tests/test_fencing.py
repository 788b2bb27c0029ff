"""Writers on an object store are fenced, on moto's S3 server with injected faults and pauses.

A transient renewal failure does not lose the lease; a lease that is really lost stops the stage; a holder paused
past its lease (after its last lease check) can never overwrite or delete another writer's commit; and the remote
checkpoint's copying thread never brings back a batch the stage run deleted.
"""

from __future__ import annotations

import errno
import json
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dd_assets import StageParquetIOManager
from dd_assets.engine.artifact_layout import BATCHES
from dd_assets.engine.artifact_layout import DATASET_NAME as ARTIFACTS
from dd_assets.run import remote_checkpoint
from dd_assets.run.remote_checkpoint import RemoteCheckpoint
from dd_assets.storage import publish as publishing
from dd_assets.storage.layout import CHECKPOINTS_DIR
from dd_assets.storage.object_store_lock import ObjectStoreLock, skew_margin
from dd_assets.storage.publish import StageOutput
from dd_assets.storage.records import StageStorageError
from dd_assets.storage.stage_lock import StageBusyError, StageLockLostError
from dd_assets_tests.helpers import failure_message, materialize, seeded_llm_workflow


def _machine(s3_server, s3_bucket: str, tmp_path: Path, name: str, **settings) -> StageParquetIOManager:
    """An IO manager as another machine has it: the same bucket, its own local disk."""
    return StageParquetIOManager(
        base_dir=f"s3://{s3_bucket}/prefix",
        local_work_dir=str(tmp_path / name),
        **s3_server.storage_options(),
        **settings,
    )


def _failing_renewals(monkeypatch, *, times: int | None, after_put: bool = False) -> list[str]:
    """Make lease renewals (``If-Match`` PUTs of a lease) fail ``times`` times (``None``: always).

    ``after_put``: the PUT reaches the store and only its answer is lost (a connection reset on the way back).
    """
    failures: list[str] = []
    real = ObjectStoreLock._call

    def call(self, method: str, **kwargs):
        renewal = method == "put_object" and "IfMatch" in kwargs and self._etag is not None
        if not renewal or (times is not None and len(failures) >= times):
            return real(self, method, **kwargs)
        failures.append(method)
        if after_put:
            real(self, method, **kwargs)
        raise OSError(errno.ECONNRESET, "injected: connection reset by peer")

    monkeypatch.setattr(ObjectStoreLock, "_call", call)
    return failures


# --- item 6a: renewal retries until the lease has really expired; a lost lease stops the run -----------------------


@pytest.mark.parametrize("fault", ["refused", "answer_lost"])
def test_one_failed_lease_renewal_does_not_lose_the_lease(s3_server, s3_bucket, tmp_path, monkeypatch, fault):
    failures = _failing_renewals(monkeypatch, times=1, after_put=fault == "answer_lost")
    machine = _machine(s3_server, s3_bucket, tmp_path, "machine-a", lock_lease_s=1.5)
    with machine.stage_lock("w", "s", "run-a") as holder:
        time.sleep(3)  # two lease times: the first renewal failed, the next ones succeeded
        assert failures
        holder.check_held()
        assert holder.lost_reason is None
        with pytest.raises(StageBusyError, match="run run-a"):  # nobody can take it meanwhile
            _machine(s3_server, s3_bucket, tmp_path, "machine-b").stage_lock("w", "s", "run-b").acquire()


def test_a_lease_not_renewed_for_its_lease_time_is_lost_and_the_holder_is_told(
    s3_server, s3_bucket, tmp_path, monkeypatch
):
    _failing_renewals(monkeypatch, times=None)
    holder = _machine(s3_server, s3_bucket, tmp_path, "machine-a", lock_lease_s=1.5).stage_lock("w", "s", "run-a")
    holder.acquire()
    acquired = time.monotonic()
    told: list[str] = []
    lost = threading.Event()
    holder.when_lost(lambda message: (told.append(message), lost.set()))
    try:
        assert lost.wait(10)
        # not at the first failed renewal (0.5 s): only once no renewal succeeded for the whole lease
        assert time.monotonic() - acquired >= 1.2
        assert "workflow 'w', stage 's'" in told[0] and "no renewal succeeded for 1.5 s" in told[0]
        with pytest.raises(StageLockLostError, match="no renewal succeeded"):
            holder.check_held()
        late: list[str] = []
        holder.when_lost(late.append)  # told at once when asking after the loss
        assert late and "lost the stage's lease" in late[0]
    finally:
        holder.release()


def test_a_lost_lease_stops_generation(s3_server, s3_bucket, tmp_path, llm, llm_resource, monkeypatch, instance):
    io_manager = _machine(s3_server, s3_bucket, tmp_path, "machine-a", lock_lease_s=1.5, checkpoint_every_s=0)
    workflow = seeded_llm_workflow("lease", 60)
    assert materialize(workflow, io_manager, instance, resource=llm_resource, selection=["lease/seed"]).success
    llm.reset()
    llm.delay_s = 0.2  # 60 requests two at a time: about 6 s of generation
    _failing_renewals(monkeypatch, times=None)
    result = materialize(
        workflow, io_manager, instance, resource=llm_resource, selection=["lease/write"], raise_on_error=False
    )
    assert not result.success
    message = failure_message(result, "lease", "write")
    assert "lost the stage's lease" in message and "no renewal succeeded" in message, message
    assert llm.count("generation") <= 30, llm.count("generation")  # it stopped at the loss, not at the end
    assert io_manager.read_record("lease", "write") is None


# --- item 6b: a holder paused past its lease never overwrites or deletes another writer's commit --------------------


def _output(lock, folder: Path, value: int) -> StageOutput:
    """A finished stage run's output: three rows of ``v = value`` in its own work folder."""
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"v": [value] * 3}), folder / "part.parquet")
    return StageOutput(
        workflow="w",
        stage="s",
        version=f"v{value}-{uuid.uuid4().hex[:8]}",
        work_dir=folder,
        files=[folder / "part.parquet"],
        record={"workflow": "w", "stage": "s", "run_id": f"run-{value}", "status": "completed"},
        lock=lock,
    )


def _versions(s3_server, s3_bucket: str) -> set[str]:
    return {k.split("/versions/")[1].split("/")[0] for k in s3_server.keys(s3_bucket, "prefix/w/s/versions/")}


@pytest.mark.parametrize("pause", ["before_commit", "before_cleanup"])
def test_a_holder_paused_past_its_lease_never_overwrites_or_deletes_the_next_writers_commit(
    s3_server, s3_bucket, tmp_path, monkeypatch, pause
):
    machine_a = _machine(s3_server, s3_bucket, tmp_path, "machine-a", lock_lease_s=1.5)
    machine_b = _machine(s3_server, s3_bucket, tmp_path, "machine-b", lock_lease_s=1.5, lock_timeout_s=20)
    with machine_a.stage_lock("w", "s", "run-0") as lock:
        first = machine_a.publish(_output(lock, tmp_path / "run-0" / "key", 0))

    # machine A's process pauses (a GC pause, slow requests) after its last lease check, before the commit or
    # between the commit and its cleanup
    paused, resume = threading.Event(), threading.Event()
    hook = "_write_record" if pause == "before_commit" else "after_commit"
    real = getattr(publishing, hook)

    def pausing(store, *args, **kwargs):
        if store.local_work_dir == machine_a.local_work_dir and not paused.is_set():
            paused.set()
            assert resume.wait(60)
        return real(store, *args, **kwargs)

    monkeypatch.setattr(publishing, hook, pausing)
    holder = machine_a.stage_lock("w", "s", "run-a").acquire()
    outcome: list[object] = []

    def publish_a() -> None:
        try:
            outcome.append(machine_a.publish(_output(holder, tmp_path / "run-a" / "key", 1)))
        except StageStorageError as exc:
            outcome.append(exc)

    publisher = threading.Thread(target=publish_a)
    publisher.start()
    try:
        assert paused.wait(30)
        holder._stop.set()  # the whole process is paused: its lease is not renewed either
        # machine B takes the stage over once A's lease expired, and publishes
        with machine_b.stage_lock("w", "s", "run-b") as taker:
            assert taker.previous_owner["run"] == "run-a"
            committed = machine_b.publish(_output(taker, tmp_path / "run-b" / "key", 2))
    finally:
        resume.set()
        publisher.join(60)
        holder.release()
    assert not publisher.is_alive()

    # B's commit stands, whole: A neither overwrote its record nor deleted its files
    assert machine_b.read_record("w", "s") == json.loads(json.dumps(committed, default=str))
    assert machine_b.read_stage("w", "s").to_arrow().column("v").to_pylist() == [2, 2, 2]
    assert committed["version"] in _versions(s3_server, s3_bucket)
    if pause == "before_commit":
        assert isinstance(outcome[0], StageStorageError), outcome
        assert "another run committed the stage" in str(outcome[0])
        assert committed["previous"]["version"] == first["version"]
    else:  # A committed before B took over: B's commit replaced it, and A's late cleanup removed none of B's
        assert outcome[0]["version"] == committed["previous"]["version"]
        assert outcome[0]["superseded"] == []


def test_a_takeover_allows_for_a_holder_clock_running_behind(s3_server, s3_bucket, tmp_path):
    lease_s = 4.0
    margin = skew_margin(lease_s)
    # a live holder on a machine whose wall clock runs almost `margin` behind: by the taker's clock, the lease it
    # renewed a moment ago expires that much early (wider than the taker's 0.5 s polling)
    holder_clock_behind = 0.9 * margin
    machine = _machine(s3_server, s3_bucket, tmp_path, "machine-b", lock_lease_s=lease_s, lock_timeout_s=20)
    lease_path = machine.stage_dir("w", "s") / ".lock"
    expires = time.time() - holder_clock_behind + lease_s
    s3_server.client().put_object(
        Bucket=s3_bucket,
        Key=lease_path.path.partition("/")[2],
        Body=json.dumps({"run": "run-a", "holder": "a", "token": "t", "expires_at": expires}).encode(),
    )
    renewed = time.monotonic()
    with machine.stage_lock("w", "s", "run-b") as taker:
        took = time.monotonic() - renewed
        assert taker.previous_owner["run"] == "run-a"
    # never before the holder's own deadline (lease_s after its renewal, by its monotonic clock)
    assert took >= lease_s, took


# --- item 8: the checkpoint's copying thread against discard() / remove() on the stage run's thread ---------------


class PausedUpload:
    """Holds the first copy of a batch file in flight (before or after its PUT) until released."""

    def __init__(self, monkeypatch, when: str) -> None:
        self.when = when
        self.in_flight = threading.Event()
        self.go = threading.Event()
        real = remote_checkpoint._upload

        def upload(fs, path: Path, remote_path: str) -> None:
            hold = path.name.startswith("batch_") and not self.in_flight.is_set()
            if hold and when == "before_put":  # the file is read (open), its PUT not yet on the store
                sending = path.with_name(f"sending-{path.name}")
                sending.write_bytes(path.read_bytes())
                self.in_flight.set()
                assert self.go.wait(30)
                path = sending
            real(fs, path, remote_path)
            if hold and when == "after_put":
                self.in_flight.set()
                assert self.go.wait(30)

        monkeypatch.setattr(remote_checkpoint, "_upload", upload)


@pytest.mark.parametrize("delete", ["discard", "remove"])
@pytest.mark.parametrize("when", ["before_put", "after_put"])
def test_a_checkpoint_delete_wins_over_an_upload_in_flight(s3_io_manager, tmp_path, monkeypatch, delete, when):
    work_dir = tmp_path / "work" / "key"
    batch = work_dir / ARTIFACTS / BATCHES / "batch_00000.parquet"
    batch.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2]}), batch)  # a short batch Data Designer salvaged while stopping
    remote = s3_io_manager.stage_dir("w", "s") / CHECKPOINTS_DIR / "key"
    checkpoint = RemoteCheckpoint(remote, work_dir, every_s=0)
    paused = PausedUpload(monkeypatch, when)

    copier = threading.Thread(target=checkpoint.sync)  # the background thread's round, driven by hand
    copier.start()
    assert paused.in_flight.wait(30)
    batch.unlink()  # the stage run drops the short batch, then its stored copy (or the whole checkpoint)
    if delete == "discard":
        checkpoint.discard(batch)
    else:
        checkpoint.remove()
    paused.go.set()
    copier.join(30)
    assert not copier.is_alive()

    stored = remote / ARTIFACTS / BATCHES / "batch_00000.parquet"
    assert not stored.exists(), "the deleted batch came back onto the store"
    assert f"{BATCHES}/batch_00000.parquet" not in checkpoint.uploaded
    assert not checkpoint.errors
