"""Writers on an object store are fenced, on moto's S3 server with injected faults and pauses.

A transient renewal failure does not lose the lease; a lease that is really lost stops the stage; a holder paused
past its lease (after its last lease check) can never overwrite or delete another writer's commit; and the remote
checkpoint's copying thread never brings back a batch the stage run deleted.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dd_assets import remote_checkpoint
from dd_assets.remote_checkpoint import ARTIFACTS, BATCHES, CHECKPOINTS_DIR, RemoteCheckpoint

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
