"""Routing Data Designer's log lines into the Dagster event log of a materialization.

Data Designer logs from its generation threads, several lines per batch. Writing each line as its own
Dagster event would block generation on an event-log write (a few ms each on SQLite), so lines are
queued and a background thread writes them in groups: INFO lines every ``flush_interval`` seconds as one
DEBUG event (Data Designer's progress chatter: in the UI's event log, and on the console only at Dagster's DEBUG
level; the stage itself logs one INFO line), warnings and errors as soon as they come, each with its level. Secret
values are redacted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import dagster as dg

from dd_assets.engine.stage_context import CURRENT_STAGE
from dd_assets.spec.secrets import redact

DATA_DESIGNER_LOGGER = "data_designer"
FLUSH_INTERVAL_S = 5.0
"""How often queued INFO lines are written, as one event: each event-log write costs CPU beside the generation threads
and a few fsyncs of the instance's database, so they are grouped: one event every 5 s at most, the cadence of the
progress reports."""


class DagsterLogHandler(logging.Handler):
    """Queues Data Designer's records and forwards them to ``context.log`` from a background thread."""

    def __init__(self, context: dg.AssetExecutionContext, prefix: str, secrets: list[str], flush_interval: float):
        super().__init__(level=logging.INFO)
        self._context = context
        self._prefix = prefix
        self._secrets = secrets
        self._flush_interval = flush_interval
        self._pending: list[tuple[int, str]] = []
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="dd-assets-log-bridge", daemon=True)
        self._worker.start()

    def redact(self, text: str) -> str:
        """The text with every known secret value replaced."""
        return redact(text, self._secrets)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.redact(f"{self._prefix}{record.getMessage()}")
        except Exception:  # logging must never break generation
            self.handleError(record)
            return
        with self._pending_lock:
            self._pending.append((record.levelno, line))
        if record.levelno >= logging.WARNING:
            self._wake.set()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, []
        info: list[str] = []
        for level, line in pending:
            if level >= logging.WARNING:
                self._write_info(info)
                info = []
                (self._context.log.error if level >= logging.ERROR else self._context.log.warning)(line)
            else:
                info.append(line)
        self._write_info(info)

    def _write_info(self, lines: list[str]) -> None:
        if lines:
            self._context.log.debug("\n".join(lines))

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._worker.join(timeout=30)
        self.flush()
        super().close()


_logger_users = 0
_logger_saved: tuple[int, bool] = (logging.NOTSET, True)
_logger_lock = threading.Lock()


@contextlib.contextmanager
def data_designer_logs_to_dagster(
    context: dg.AssetExecutionContext,
    prefix: str = "",
    secrets: list[str] | None = None,
    flush_interval: float = FLUSH_INTERVAL_S,
    stage_label: str | None = None,
) -> Iterator[DagsterLogHandler]:
    """Within the block, Data Designer's INFO+ log lines go to the Dagster event log (INFO lines at DEBUG).

    With ``stage_label``, only lines logged on behalf of that stage (see :mod:`dd_assets.engine.stage_context`) are
    taken, so stages running at the same time each get their own lines. The ``data_designer`` logger is set up
    while any block is open and restored when the last one closes.
    """
    global _logger_users, _logger_saved
    logger = logging.getLogger(DATA_DESIGNER_LOGGER)
    handler = DagsterLogHandler(context, prefix, secrets or [], flush_interval)
    if stage_label is not None:
        handler.addFilter(_OnBehalfOf(stage_label))
    with _logger_lock:
        if _logger_users == 0:
            _logger_saved = (logger.level, logger.propagate)
            logger.setLevel(logging.INFO)
            logger.propagate = False
        _logger_users += 1
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        with _logger_lock:
            logger.removeHandler(handler)
            _logger_users -= 1
            if _logger_users == 0:
                logger.setLevel(_logger_saved[0])
                logger.propagate = _logger_saved[1]
        handler.close()


class _OnBehalfOf(logging.Filter):
    """Takes the records logged for one stage, and those logged outside any stage."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        stage = CURRENT_STAGE.get()
        return stage is None or stage.label == self.label
