"""Resume across machines: a running stage copies its finished batches to the object store as it goes.

With a URL ``base_dir`` a stage generates in a local work directory on whichever machine runs the step. While
Data Designer generates, every *finished* batch (and Data Designer's ``metadata.json``) is copied to
``<stage>/.work/<work key>/`` on the store. A retry of the step on another machine finds
no local work, restores the checkpoint of the same work key (same generation inputs) and Data Designer resumes
from it: the finished batches are not requested again. Publishing the stage removes its checkpoints.

What is copied, and why it is consistent (Data Designer 0.9 and 1.0, ``engine/storage/artifact_storage.py``):

- ``parquet-files/batch_N.parquet`` appears by an atomic rename once batch N is complete;
- ``dropped-columns-parquet-files/batch_N.parquet`` and ``processors-files/*/batch_N.parquet`` are written
  before batch N is renamed into place, so they are complete once it is, and are copied before it;
- ``metadata.json`` is replaced atomically (it holds the target and buffer size resume checks);
- ``tmp-partial-parquet-files/`` (a batch in progress) is never copied: resume discards it anyway;
- the work directory's ``tokens_spent.json`` (the tokens this work used, counted in a stage's ``token_budget``) is
  copied beside ``artifacts/`` and restored with it, so a retry elsewhere cannot spend the budget again.

Data Designer refuses to resume when the stored ``config_hash`` differs from the current config's, and its hash
includes the seed file's *path*, which is another folder on another machine. The checkpoint's folder is named by
the work key, which hashes the config without the seed's location plus the seed's *content*
(:func:`dd_assets.spec.versioning.generation_inputs`), so the same work key already proves the same config and the
same seed rows: a restored ``metadata.json`` leaves its ``config_hash`` out (and ``builder_config.json`` is never
copied), and Data Designer skips its own path-bound check.

When a batch is copied: Data Designer calls ``create(..., on_batch_complete=...)`` with each batch file the moment
it is renamed into place (0.9.7 and 1.0 alike, ``DatasetBuilder._build_async``), and
:meth:`RemoteCheckpoint.batch_completed` hands it to a copying thread: the hook runs on Data Designer's generation
path, so it only queues (the upload would hold up generation). What the hook does not announce is copied by the
same thread on a timer, every ``every_s`` seconds without a batch: ``metadata.json`` (first written just *after*
the first batch's hook returns) and ``tokens_spent.json`` (the guard rewrites it while a batch is generating, and a
machine that dies mid-batch must not lose that spend). Batches the hook never names are found in the folder: at
:meth:`RemoteCheckpoint.start` those an earlier run on this machine finished, and after a failure
(``stop(final_sync=True)``) whatever finished since the last copy.

The copying thread and the stage run's thread share the checkpoint: a delete (:meth:`RemoteCheckpoint.discard` of a
batch reopened after a stop, :meth:`RemoteCheckpoint.remove` of the whole checkpoint) always wins over a copy in
flight. Each copy notes the delete counts of its path before it starts; if a delete ran meanwhile, the copy takes
its object back off the store when it returns, so a discarded batch never comes back (``uploaded`` is kept under a
lock).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path

from upath import UPath

from dd_assets.engine import artifact_layout
from dd_assets.engine.tokens_spent import SPENT_FILE, read_tokens_spent, write_tokens_spent
from dd_assets.storage.layout import remove_checkpoints

logger = logging.getLogger(__name__)


class RemoteCheckpoint:
    """The checkpoint of one work directory on the object store (see the module docstring)."""

    def __init__(self, remote_dir: UPath, work_dir: Path, every_s: float = 2.0):
        self.remote_dir = remote_dir
        self.work_dir = work_dir
        self.every_s = every_s
        self.uploaded: dict[str, tuple[int, int]] = {}  # relative path -> (mtime_ns, size) when copied
        self._lock = threading.Lock()  # guards uploaded, _deleted and _removals (two threads use them)
        self._deleted: dict[str, int] = {}  # relative path -> how often discard() deleted it
        self._removals = 0  # how often remove() deleted the whole checkpoint
        self._batches: queue.SimpleQueue[Path | None] = queue.SimpleQueue()  # finished batches; None ends the thread
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    @property
    def _local(self) -> Path:
        return self.work_dir / artifact_layout.DATASET_NAME

    @property
    def _remote(self) -> UPath:
        return self.remote_dir / artifact_layout.DATASET_NAME

    # --- restoring -----------------------------------------------------------------------------
    def restore(self) -> int:
        """Download the checkpoint when this machine has no work of its own; returns the batches restored."""
        self._restore_tokens_spent()
        if (self._local / artifact_layout.METADATA).exists():
            return 0  # this machine's own work is at least as far along
        try:
            if not (self._remote / artifact_layout.METADATA).exists():
                return 0
            files = [
                path
                for path in self.remote_dir.fs.find(self._remote.path)
                if not Path(path).name.startswith(".") and ".tmp." not in Path(path).name
            ]
        except FileNotFoundError:
            return 0
        restored = 0
        prefix = self._remote.path.rstrip("/") + "/"
        for path in sorted(files, key=lambda p: p.endswith(artifact_layout.METADATA)):  # metadata.json last
            relative = path[len(prefix) :]
            target = self._local / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            self.remote_dir.fs.get_file(path, str(tmp))
            tmp.replace(target)
            with self._lock:
                self.uploaded[relative] = _stamp(target)
            if relative.startswith(f"{artifact_layout.BATCHES}/"):
                restored += 1
        if restored:
            _drop_config_hash(self._local / artifact_layout.METADATA)
        return restored

    # --- copying as it goes --------------------------------------------------------------------
    def start(self) -> None:
        """Copy what this machine already holds, then each batch :meth:`batch_completed` hands over, until
        :meth:`stop` (the timer's copies between batches every ``every_s`` seconds)."""
        if self.every_s <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="dd-assets-checkpoint", daemon=True)
        self._thread.start()

    def batch_completed(self, batch: Path | str) -> None:
        """Data Designer's ``on_batch_complete``: queue the finished batch for the copying thread."""
        if self._thread is not None:
            self._batches.put(Path(batch))

    def stop(self, *, final_sync: bool) -> None:
        """Stop copying once the queued batches are copied; ``final_sync`` copies anything else that finished since
        (after a failure)."""
        if self._thread is not None:
            self._batches.put(None)
            self._thread.join()
            self._thread = None
        if final_sync and self.every_s > 0:
            self.sync()

    def _loop(self) -> None:
        self.sync()  # the batches an earlier run on this machine finished
        while True:
            try:
                batch = self._batches.get(timeout=self.every_s)
            except queue.Empty:
                self._copy()  # metadata.json and tokens_spent.json change between batches
                continue
            if batch is None:
                return
            self._copy(batch)

    def sync(self) -> int:
        """Copy every finished batch in the folder not copied yet, then ``metadata.json`` and the tokens spent."""
        return self._copy(*sorted((self._local / artifact_layout.BATCHES).glob(artifact_layout.BATCH_GLOB)))

    def _copy(self, *batches: Path) -> int:
        """Copy ``batches`` not copied yet (companions first), then ``metadata.json`` and the tokens spent if they
        changed; returns the batches copied."""
        copied = 0
        try:
            for batch in batches:
                if not self._changed(batch):
                    continue
                for companion in self._companions(batch.name):
                    if self._changed(companion):
                        self._put(companion)
                self._put(batch)
                copied += 1
            metadata = self._local / artifact_layout.METADATA
            if metadata.exists() and self._changed(metadata):
                self._put(metadata)
            self._sync_tokens_spent()
        except Exception as exc:  # noqa: BLE001 - a copy failure costs only the resume, never the run
            self.errors.append(str(exc))
            logger.warning("checkpointing %s to %s failed: %s", self.work_dir, self.remote_dir, exc)
        return copied

    def _companions(self, batch_name: str) -> list[Path]:
        found = [self._local / folder / batch_name for folder in (artifact_layout.DROPPED_COLUMNS,)]
        found += list((self._local / artifact_layout.PROCESSOR_OUTPUTS).glob(f"*/{batch_name}"))
        return [path for path in found if path.is_file()]

    def _changed(self, path: Path) -> bool:
        """True when ``path`` was not copied yet, or was rewritten since (a batch generated again)."""
        try:
            stamp = _stamp(path)
        except FileNotFoundError:
            return False
        with self._lock:
            return self.uploaded.get(path.relative_to(self._local).as_posix()) != stamp

    def _put(self, path: Path) -> None:
        relative = path.relative_to(self._local).as_posix()
        self._copy_file(path, relative, self._remote / relative)

    def _copy_file(self, path: Path, name: str, target: UPath) -> None:
        """Copy ``path`` to ``target`` and note it as ``name`` in ``uploaded``, unless a delete ran meanwhile."""
        stamp = _stamp(path)
        with self._lock:
            before = (self._removals, self._deleted.get(name, 0))
        _upload(self.remote_dir.fs, path, target.path)
        with self._lock:
            if (self._removals, self._deleted.get(name, 0)) == before:
                self.uploaded[name] = stamp
                return
        # discard() or remove() ran while the copy was in flight, maybe before it landed: the delete wins
        try:
            target.fs.rm_file(target.path)
        except FileNotFoundError:
            pass

    # --- the tokens this work has used, counted in the stage's budget on whichever machine resumes it ---------
    def _restore_tokens_spent(self) -> None:
        """Take the larger of the local and the stored count: a machine's old local count never lowers it."""
        stored = read_tokens_spent(self.remote_dir)  # 0 when there is none, or it cannot be read
        if stored > read_tokens_spent(self.work_dir):
            self.work_dir.mkdir(parents=True, exist_ok=True)
            write_tokens_spent(self.work_dir, stored)

    def _sync_tokens_spent(self) -> None:
        local = self.work_dir / SPENT_FILE
        try:
            stamp = _stamp(local)
        except FileNotFoundError:
            return
        with self._lock:
            changed = self.uploaded.get(SPENT_FILE) != stamp
        if changed:
            self._copy_file(local, SPENT_FILE, self.remote_dir / SPENT_FILE)

    def discard(self, batch: Path) -> None:
        """Delete a local batch file's stored copy (a batch reopened after a stop must not come back)."""
        relative = batch.relative_to(self._local).as_posix()
        with self._lock:  # first, so that a copy of it in flight now takes its object back when it returns
            self._deleted[relative] = self._deleted.get(relative, 0) + 1
            self.uploaded.pop(relative, None)
        try:
            (self._remote / relative).unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("deleting %s from %s failed: %s", relative, self.remote_dir, exc)

    # --- cleaning up ---------------------------------------------------------------------------
    def remove(self) -> None:
        """Delete this checkpoint from the store (and forget what was copied); a copy in flight is taken back."""
        with self._lock:
            self._removals += 1
            self.uploaded.clear()
        remove_checkpoints(self.remote_dir)


def _upload(fs, path: Path, remote_path: str) -> None:
    """One file's copy to the store (a seam the tests pause to hold a copy in flight)."""
    fs.put_file(str(path), remote_path)


def _drop_config_hash(metadata_path: Path) -> None:
    metadata = json.loads(metadata_path.read_text())
    metadata.pop("config_hash", None)
    metadata.pop("config_hash_version", None)
    tmp = metadata_path.with_name(f".{metadata_path.name}.part")
    tmp.write_text(json.dumps(metadata, indent=2))
    tmp.replace(metadata_path)


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size
