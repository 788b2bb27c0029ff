"""The tokens an unfinished stage's work has used, kept in its work directory: retries cannot spend the budget again."""

from __future__ import annotations

import json
import time
from pathlib import Path

SPENT_FILE = "tokens_spent.json"
"""In a stage's work directory: the tokens earlier, unfinished runs of that work used (counted in its budget)."""
SPENT_WRITE_EVERY_S = 2.0


def read_tokens_spent(work_dir: Path) -> int:
    """Tokens earlier, unfinished runs of this work used (0 when none were recorded or readable); ``work_dir`` may
    also be a checkpoint folder on an object store (a ``UPath``)."""
    try:
        return int(json.loads((work_dir / SPENT_FILE).read_text())["tokens"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def write_tokens_spent(work_dir: Path, tokens: int) -> None:
    """Record the tokens this unfinished work has used so far (replaced atomically)."""
    if not work_dir.exists():
        return
    part = work_dir / f"{SPENT_FILE}.part"
    part.write_text(json.dumps({"tokens": tokens}))
    part.replace(work_dir / SPENT_FILE)


class TokensSpentRecorder:
    """Keeps a work directory's :data:`SPENT_FILE` current while the stage runs, should the run die: written at most
    every :data:`SPENT_WRITE_EVERY_S` seconds, and only when the count changed."""

    def __init__(self, work_dir: Path, tokens: int) -> None:
        self.work_dir = work_dir
        self._written = tokens
        self._last_write = time.monotonic()

    def record(self, tokens: int) -> None:
        if time.monotonic() - self._last_write < SPENT_WRITE_EVERY_S:
            return
        self._last_write = time.monotonic()
        if tokens != self._written:
            self._written = tokens
            write_tokens_spent(self.work_dir, tokens)
