"""How a stage's model requests fail: which failures keep its stall clock running, and a tally of why they failed."""

from __future__ import annotations

from data_designer.engine.models.clients.errors import ProviderError, ProviderErrorKind

from dd_assets.engine.guard_hooks import ModelCall, RefusedByGuard

STILL_WAITING = frozenset({ProviderErrorKind.RATE_LIMIT, ProviderErrorKind.REQUEST_ADMISSION_TIMEOUT})
"""Failures Data Designer retries without end (its "preserved retryable" errors): the cell still waits for an answer,
so they keep the stall clock running between attempts. After a failure the provider answered (a 5xx, a 400) the
clock runs only while requests are in flight (Data Designer retries those a few times, then drops the record)."""
NOTHING_ANSWERED = frozenset({ProviderErrorKind.API_CONNECTION, ProviderErrorKind.TIMEOUT})
"""Failures without an HTTP status: the provider answered nothing (refused or dropped connections, no answer in
time). A provider that died makes Data Designer defer such rows to salvage rounds and retry them; the clock keeps
running through them, so a dead provider fails the stage at its deadline as a stall."""


def still_waiting(error: BaseException) -> bool:
    """Whether Data Designer retries after this failure without end (so the cell still waits for an answer)."""
    return isinstance(error, ProviderError) and error.kind in STILL_WAITING


def nothing_answered(error: BaseException) -> bool:
    """Whether the provider answered nothing at all (no HTTP status): a connection error or a timeout."""
    return isinstance(error, ProviderError) and error.kind in NOTHING_ANSWERED and error.status_code is None


def provider_message(error: BaseException, limit: int = 300) -> str:
    """The provider's own words for a failed request (its error message), on one line and cut at ``limit``."""
    if isinstance(error, RefusedByGuard):
        return ""
    text = " ".join(str(getattr(error, "message", None) or error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(error: BaseException) -> str:
    """A short, key-free description of a failed request: HTTP status and kind, or the exception type."""
    if isinstance(error, ProviderError):
        status = f"HTTP {error.status_code} " if error.status_code is not None else ""
        return f"{status}{error.kind.value}"
    return type(error).__name__


class FailureTally:
    """The attempts of one stage run's model requests and why they failed, for its stall message and failure report.

    Not locked on its own: the stage's guard calls it under its lock.
    """

    def __init__(self) -> None:
        self.attempts = 0
        self.failures_since_success = 0
        self.last_error: str | None = None
        self._failures: dict[tuple[ModelCall, str], list] = {}  # (call, kind) -> [count, the first message]

    def success(self) -> None:
        self.attempts += 1
        self.failures_since_success = 0

    def failure(self, call: ModelCall, error: BaseException) -> None:
        self.failures_since_success += 1
        self.last_error = describe_error(error)
        self.attempts += 1
        entry = self._failures.setdefault((call, self.last_error), [0, provider_message(error)])
        entry[0] += 1

    def report(self) -> str | None:
        """Why the requests failed, the most frequent reason first (``None``: none failed).

        ``"40 of 41 model requests failed: HTTP 400 context_window_exceeded from model alias 'm' (...), 40 times:
        This model's maximum context length is ..."``: what Data Designer leaves to "the warnings above".
        """
        failures = sorted(self._failures.items(), key=lambda item: -item[1][0])
        if not failures:
            return None
        failed = sum(count for _, (count, _) in failures)
        reasons = [
            f"{kind} from {call.describe()}, {count} time(s){f': {message}' if message else ''}"
            for (call, kind), (count, message) in failures[:2]
        ]
        more = f"; and {len(failures) - 2} other reason(s)" if len(failures) > 2 else ""
        return f"{failed} of {self.attempts} model requests failed: {'; '.join(reasons)}{more}"
