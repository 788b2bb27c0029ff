"""Progress of a running stage, as structured events in the run's event log.

Data Designer calls ``create(..., on_batch_complete=...)`` with each batch file it has just finished
(:meth:`StageProgress.batch_completed`): the stage reports then, with the batch counted, but at most once every
``progress_every_s`` seconds (a ``DataDesignerResource`` setting, 5 s by default; ``0`` turns reports off), so that
batches finishing close together share a report and the event log grows with time, not with batches. Between
batches it reports every ``progress_every_s`` seconds too, as the hook cannot: requests and time left move while a
batch is generating, and one batch may take most of a run (Data Designer's default ``buffer_size`` is 1000
records). A report holds batches and records done of the total,
model requests succeeded and failed, records per second and the estimated time left; it is an engine event with
that metadata, written straight to the event log (so it shows while the step runs, not when it ends), and a log
line. The final figures go into the materialization metadata (:meth:`StageProgress.final_metadata`).

Records are counted from the parquet footers of the batches the hook names (and, at the start and the end, of the
batch files in the work directory: those an earlier run finished, and what a restart from scratch left), requests
from the stage's own usage meter, so both stay exact while stages run side by side. The hook runs on Data
Designer's generation path, so it only notes the batch: a reporting thread reads it and writes the event.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from dd_assets.engine import artifact_layout

logger = logging.getLogger(__name__)


class StageProgress:
    """Reports one stage run's progress (see the module docstring)."""

    def __init__(
        self,
        *,
        where: str,
        work_dir: Path,
        num_records: int,
        buffer_size: int,
        usage: Callable[[], dict[str, dict[str, int]]],
        report: Callable[[str, dict[str, Any]], None],
        every_s: float,
    ):
        self.where = where
        self.work_dir = work_dir
        self.num_records = num_records
        self.total_batches = max(1, math.ceil(num_records / max(1, buffer_size)))
        self.usage = usage
        self.report = report
        self.every_s = every_s
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._batch_done = threading.Event()  # set by batch_completed(), and by stop() to end the thread
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards _finished (Data Designer's thread adds, the reporter takes)
        self._finished: list[Path] = []  # batches the hook named, not counted yet
        self._rows: dict[str, int] = {}  # batch file name -> records
        self._resumed_rows = 0

    def start(self) -> None:
        """Report on each finished batch and every ``every_s`` seconds until :meth:`stop` (none at ``every_s <= 0``)."""
        self.started = time.monotonic()
        self._count_folder()
        self._resumed_rows = sum(self._rows.values())  # finished before this run: not part of its rate
        if self.every_s > 0:
            self._thread = threading.Thread(target=self._loop, name="dd-assets-progress", daemon=True)
            self._thread.start()

    def batch_completed(self, path: Path | str) -> None:
        """Data Designer's ``on_batch_complete``: note the finished batch and wake the reporting thread."""
        with self._lock:
            self._finished.append(Path(path))
        self._batch_done.set()

    def stop(self) -> None:
        self._stop.set()
        self._batch_done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        last = time.monotonic()
        while True:
            self._batch_done.wait(self.every_s)  # a batch finished, or every_s passed without one
            if self._stop.is_set():
                return
            # At most one report per every_s: batches that finish close together share one, as before the hook.
            if self._stop.wait(max(0.0, last + self.every_s - time.monotonic())):
                return
            self._batch_done.clear()
            last = time.monotonic()
            try:
                figures = self.figures()
                self.report(self.describe(figures), figures)
            except Exception as exc:  # noqa: BLE001 - progress must never break the run
                logger.warning("%s: progress report failed: %s: %s", self.where, type(exc).__name__, exc)

    def _records_done(self) -> tuple[int, int]:
        with self._lock:
            finished, self._finished = self._finished, []
        for path in finished:
            try:
                self._rows[path.name] = pq.read_metadata(path).num_rows
            except Exception:  # noqa: BLE001 - gone already (a stopped run's short batch): the folder count decides
                continue
        return len(self._rows), sum(self._rows.values())

    def _count_folder(self) -> None:
        """Count the batch files in the work directory: those the hook did not name, and none that are gone."""
        folder = artifact_layout.batches_dir(self.work_dir)
        on_disk = {path.name: path for path in folder.glob(artifact_layout.BATCH_GLOB)} if folder.is_dir() else {}
        self._rows = {name: rows for name, rows in self._rows.items() if name in on_disk}
        for name, path in on_disk.items():
            if name not in self._rows:
                try:
                    self._rows[name] = pq.read_metadata(path).num_rows
                except Exception:  # noqa: BLE001 - being moved into place: not finished
                    continue

    def figures(self) -> dict[str, Any]:
        """Batches and records done, requests, rate and time left, now."""
        batches, records = self._records_done()
        usage = self.usage()
        succeeded = sum(u.get("successful_requests", 0) for u in usage.values())
        failed = sum(u.get("failed_requests", 0) for u in usage.values())
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = max(records - self._resumed_rows, 0) / elapsed
        left = max(self.num_records - records, 0)
        return {
            "batches_done": batches,
            "batches_total": self.total_batches,
            "records_done": records,
            "records_total": self.num_records,
            "requests_succeeded": succeeded,
            "requests_failed": failed,
            "records_per_second": round(rate, 2),
            "seconds_left": round(left / rate, 1) if rate > 0 else None,
            "elapsed_s": round(elapsed, 1),
        }

    def describe(self, figures: dict[str, Any]) -> str:
        left = figures["seconds_left"]
        eta = f"about {left:.0f} s left" if left is not None else "time left unknown yet"
        return (
            f"{self.where}: {figures['batches_done']}/{figures['batches_total']} batches, "
            f"{figures['records_done']}/{figures['records_total']} records, "
            f"{figures['requests_succeeded']} requests succeeded, {figures['requests_failed']} failed, "
            f"{figures['records_per_second']} records/s, {eta}"
        )

    def final_metadata(self) -> dict[str, Any]:
        """The run's final figures, as materialization metadata (its batches counted in the work directory)."""
        self._records_done()
        self._count_folder()
        figures = self.figures()
        return {
            "dd_assets/batches": dg.MetadataValue.int(figures["batches_done"]),
            "dd_assets/records_per_second": dg.MetadataValue.float(float(figures["records_per_second"])),
            "dd_assets/requests_succeeded": dg.MetadataValue.int(figures["requests_succeeded"]),
            "dd_assets/requests_failed": dg.MetadataValue.int(figures["requests_failed"]),
            "dd_assets/generation_s": dg.MetadataValue.float(float(figures["elapsed_s"])),
        }


def engine_event_reporter(context: dg.AssetExecutionContext) -> Callable[[str, dict[str, Any]], None]:
    """Write a progress report as an engine event of the running step, straight to the event log."""
    from dagster._core.events import EngineEventData

    instance, run = context.instance, context.run
    try:
        step_key = context.op_execution_context.get_step_execution_context().step.key
    except Exception:  # noqa: BLE001 - a context without a step (direct invocation): report on the run
        step_key = None

    def report(message: str, figures: dict[str, Any]) -> None:
        metadata = {f"dd_assets/progress/{k}": v for k, v in figures.items() if v is not None}
        instance.report_engine_event(message, run, EngineEventData(metadata=metadata), step_key=step_key)
        context.log.info(message)

    return report
