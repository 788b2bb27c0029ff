"""The ``dd-assets`` output redacted: every secret value a code location's resources hold printed as ``***``."""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterator
from typing import Any

from dd_assets.assets.translator import IO_MANAGER_KEY, RESOURCE_KEY
from dd_assets.spec.secrets import redact
from dd_assets.tools.code_location import CodeLocation


class RedactingStream(io.TextIOBase):
    """A text stream that writes whole lines to ``stream`` with every secret value replaced by ``***``.

    ``secrets`` is read at each write, so values learned after the stream was installed (once the code location
    is loaded) are redacted too. Lines are held until their newline, so a value is never split across writes.
    """

    def __init__(self, stream: Any, secrets: list[str]):
        super().__init__()
        self._stream, self._secrets, self._pending = stream, secrets, ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            lines, _, self._pending = self._pending.rpartition("\n")
            self._stream.write(redact(lines + "\n", self._secrets))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(redact(self._pending, self._secrets))
            self._pending = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


@contextlib.contextmanager
def redacted_output(secrets: list[str]) -> Iterator[None]:
    """Within the block, everything written to stdout and stderr (prints, log lines, tracebacks) is redacted."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(saved[0], secrets), RedactingStream(saved[1], secrets)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = saved


def location_secrets(location: CodeLocation) -> list[str]:
    """The secret values a code location's resources hold (provider keys, named headers, storage secrets)."""
    values = []
    for key in (RESOURCE_KEY, IO_MANAGER_KEY):
        secret_values = getattr(location.defs.resources.get(key), "secret_values", None)
        if callable(secret_values):
            try:
                values += secret_values()
            except Exception:  # a resource that cannot tell (its config is set at launch) holds nothing to redact
                pass
    return values
