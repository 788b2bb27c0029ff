"""The one error the ``dd-assets`` commands raise: a message for the user and the exit code to leave with."""

from __future__ import annotations


class CommandError(Exception):
    """A message for the user and the exit code to leave with (1: cannot read or write, 2: bad usage)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code
