"""The token budget of a stage run: the tokens its work used, counting those of earlier unfinished runs."""

from __future__ import annotations

import threading

BUDGET_SPENT = "token budget spent"
"""The stop reason of a stage whose budget is spent."""


class TokenBudget:
    """Tokens used against ``limit`` (``None``: no budget) by this run and by earlier runs of the same work."""

    def __init__(self, limit: int | None, tokens_before: int = 0) -> None:
        self.limit = limit
        self.tokens_before = tokens_before
        self.tokens_this_run = 0
        self._lock = threading.Lock()

    @property
    def tokens_total(self) -> int:
        return self.tokens_before + self.tokens_this_run

    @property
    def already_spent(self) -> bool:
        """Whether earlier runs of this work used the whole budget (so this run may send nothing)."""
        return self.limit is not None and self.tokens_before >= self.limit

    @property
    def exhausted(self) -> bool:
        """Whether no token is left for another request."""
        return self.limit is not None and self.tokens_total >= self.limit

    def add(self, tokens: int) -> bool:
        """Count a response's tokens; returns whether the budget is now passed."""
        with self._lock:
            self.tokens_this_run += tokens
            return self.limit is not None and self.tokens_total > self.limit

    def report(self) -> str:
        """The tokens used (and by earlier runs) against the budget, as said when the budget stops the stage."""
        earlier = f", {self.tokens_before:,} of them by earlier runs of this work" if self.tokens_before else ""
        return (
            f"token budget spent: {self.tokens_total:,} tokens used{earlier}, token_budget is "
            f"{self.limit:,}; no further model requests were sent"
        )
