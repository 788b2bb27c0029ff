"""Routing Data Designer's log lines into the Dagster event log of a materialization."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import dagster as dg

DATA_DESIGNER_LOGGER = "data_designer"


class DagsterLogHandler(logging.Handler):
    """Forwards log records to ``context.log``, with secret values redacted."""

    def __init__(self, context: dg.AssetExecutionContext, prefix: str, secrets: list[str]):
        super().__init__(level=logging.INFO)
        self._context = context
        self._prefix = prefix
        self._secrets = sorted(set(secrets), key=len, reverse=True)

    def redact(self, text: str) -> str:
        """The text with every known secret value replaced."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.redact(f"{self._prefix}{record.getMessage()}")
            if record.levelno >= logging.ERROR:
                self._context.log.error(message)
            elif record.levelno >= logging.WARNING:
                self._context.log.warning(message)
            else:
                self._context.log.info(message)
        except Exception:  # logging must never break generation
            self.handleError(record)


@contextlib.contextmanager
def data_designer_logs_to_dagster(
    context: dg.AssetExecutionContext, prefix: str = "", secrets: list[str] | None = None
) -> Iterator[DagsterLogHandler]:
    """Within the block, Data Designer's INFO+ log lines go to the Dagster event log."""
    logger = logging.getLogger(DATA_DESIGNER_LOGGER)
    handler = DagsterLogHandler(context, prefix, secrets or [])
    previous_level, previous_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        logger.propagate = previous_propagate
