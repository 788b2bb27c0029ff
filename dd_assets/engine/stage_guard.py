"""Stall deadline and token budget of a running stage: stop sending requests, stop Data Designer, keep finished batches.

A provider that answers every request with HTTP 429 makes Data Designer wait forever: its scheduler keeps
rate-limited cells for later and retries them without end. And nothing stops a stage that spends far more tokens
than intended. A :class:`StageGuard` watches one stage run's model calls and stops the stage when

- **it stalls**: its model calls have been waiting ``stall_timeout_s`` with no success: a request in flight waits,
  and so does a record rate-limited with 429 (Data Designer retries those without end) or one whose request got no
  answer at all (a refused connection, a timeout: a provider that died); a success restarts the clock, or
- **it passes its budget**: the tokens it used, with those of earlier runs of the same unfinished work (kept in
  the work directory), exceed ``token_budget``.

How it stops (Data Designer 0.9 and 1.0, read in ``engine/models/clients/model_request_executor.py`` and
``engine/dataset_builders/async_scheduler.py``):

- every model attempt passes :class:`GuardedModelClient`, set around the HTTP adapter *inside* Data Designer's
  ``ModelRequestExecutor``, so each retry is seen and, once the stage is stopped, refused before it is sent. The
  refusal is a retryable error, so Data Designer keeps the cell for later instead of dropping its row into a batch
  that would then be written short;
- the stage's scheduler run (found by a scheduler event sink when it starts) and its model health check (which runs
  before the scheduler, as its own task) are cancelled on Data Designer's event loop, as Data Designer itself does
  on Ctrl-C, and Data Designer's own cancel flag of that run is set (the watchdog sends the cancel again should
  Python lose it). Finished batches are already on disk; the batches in progress are
  discarded, so the next materialization resumes exactly the unfinished ones.

The guard of the current stage is reached through :data:`dd_assets.engine.stage_context.CURRENT_STAGE`, so stages running
side by side on the shared Data Designer each have their own deadline and budget.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from data_designer.engine.context import current_run_cancel_event
from data_designer.engine.models.clients.base import ModelClient
from data_designer.engine.models.clients.errors import ProviderError, ProviderErrorKind, SyncClientUnavailableError

from dd_assets.engine.stage_context import CURRENT_STAGE, IN_HEALTH_CHECK

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_STALL_TIMEOUT_S = 300.0
DRAIN_GRACE_S = 2.0
BUDGET_SPENT = "token budget spent"
SPENT_FILE = "tokens_spent.json"
"""In a stage's work directory: the tokens earlier, unfinished runs of that work used (counted in its budget)."""

STILL_WAITING = {ProviderErrorKind.RATE_LIMIT, ProviderErrorKind.REQUEST_ADMISSION_TIMEOUT}
"""Failures Data Designer retries without end (its "preserved retryable" errors): the cell still waits for an answer,
so they keep the stall clock running between attempts. After a failure the provider answered (a 5xx, a 400) the
clock runs only while requests are in flight (Data Designer retries those a few times, then drops the record)."""
NOTHING_ANSWERED = {ProviderErrorKind.API_CONNECTION, ProviderErrorKind.TIMEOUT}
"""Failures without an HTTP status: the provider answered nothing (refused or dropped connections, no answer in
time). A provider that died makes Data Designer defer such rows to salvage rounds and retry them; the clock keeps
running through them, so a dead provider fails the stage at its deadline as a stall."""
RECANCEL_AFTER_S = 5.0
SPENT_WRITE_EVERY_S = 2.0


@dataclass(frozen=True)
class ModelCall:
    """Which model a request goes to."""

    alias: str
    model: str
    provider: str
    endpoint: str | None = None

    def describe(self) -> str:
        at = f" at {self.endpoint}" if self.endpoint else ""
        return f"model alias {self.alias!r} (model {self.model!r}, provider {self.provider!r}{at})"


class RefusedByGuard(ProviderError):
    """A request a stopped stage's guard did not send (a kind Data Designer retries rather than dropping the row)."""


def refused_by_a_guard(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from, as Data Designer wraps provider errors) is a guard's refusal."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, RefusedByGuard):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


class StageGuard:
    """Stall deadline and token budget of one stage run (see the module docstring).

    Args:
        stall_timeout_s: fail when model calls wait this long without a success.
        token_budget: fail once the stage's tokens pass this (``None``: no budget).
        tokens_before: tokens earlier runs of the same unfinished work used (counted in the budget).
        spent_file_dir: the work directory, where the tokens used so far are written every few seconds.
    """

    def __init__(
        self,
        *,
        stall_timeout_s: float,
        token_budget: int | None,
        tokens_before: int = 0,
        spent_file_dir: Path | None = None,
    ) -> None:
        self.stall_timeout_s = stall_timeout_s
        self.spent_file_dir = spent_file_dir  # where the watchdog keeps the tokens used so far, should the run die
        self.token_budget = token_budget
        self.tokens_before = tokens_before
        self.tokens_this_run = 0
        self._lock = threading.Lock()
        self._in_flight = 0
        self._waiting_since: float | None = None
        self._last_call: ModelCall | None = None
        self._last_error: str | None = None
        self._failures_since_success = 0
        self._attempts = 0
        self._failures: dict[tuple[ModelCall, str], list] = {}  # (call, kind) -> [count, the first message]
        self._stop_reason: str | None = None
        self._stopped_at = 0.0
        self._draining = False  # stopped, but the requests in flight may still finish (and be counted)
        self._cancelled = False
        self._cancelled_at = 0.0
        self.stopped_at_wall = 0.0  # time.time() of the stop: batches written since may be short
        self._cancel_events: set[threading.Event] = set()  # Data Designer's own cancel flags of this stage's runs
        self._idle_since = 0.0  # when the last request in flight ended
        self.refused = 0  # requests refused after the stop
        self._schedulers: list[tuple[asyncio.AbstractEventLoop, asyncio.Task]] = []
        self._watchdog: threading.Thread | None = None
        self._done = threading.Event()

    # --- what the stage run reads -------------------------------------------------------------------
    @property
    def stop_reason(self) -> str | None:
        """Why the guard stopped the stage (``None`` while it has not), with the tokens used so far."""
        if self._stop_reason == BUDGET_SPENT:
            return self.budget_report()  # the requests in flight at the stop add to it
        return self._stop_reason

    @property
    def budget_spent(self) -> bool:
        """Whether the guard stopped the stage for its token budget."""
        return self._stop_reason == BUDGET_SPENT

    @property
    def budget_already_spent(self) -> bool:
        """Whether earlier runs of this work used the whole budget (so this run may send nothing)."""
        return self.token_budget is not None and self.tokens_before >= self.token_budget

    @property
    def tokens_total(self) -> int:
        return self.tokens_before + self.tokens_this_run

    def start(self) -> None:
        """Watch for a stall in a background thread until :meth:`stop_watching`."""
        self._done.clear()
        self._watchdog = threading.Thread(target=self._watch, name="dd-assets-stage-guard", daemon=True)
        self._watchdog.start()

    def stop_watching(self) -> None:
        self._done.set()
        if self._watchdog is not None:
            self._watchdog.join()
            self._watchdog = None
        with self._lock:
            self._schedulers.clear()

    # --- hooks called on Data Designer's side -------------------------------------------------------
    def cancel_on_stop(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
        """A task of this stage waiting on a provider (a generation's scheduler run, a health check) started on
        Data Designer's loop: the task to cancel when stopping, so no wait outlasts the stall deadline."""
        with self._lock:
            self._schedulers.append((loop, task))
            cancel = self._cancelled
        if cancel:
            loop.call_soon_threadsafe(task.cancel)

    def before_attempt(self, call: ModelCall) -> bool:
        """Refuse a request of a stopped stage, or of one whose budget is spent; else count it in flight.

        Returns whether this attempt started the stall clock (for :meth:`withdraw_attempt`).
        """
        cancel_event = current_run_cancel_event.get()  # the scheduler run this request belongs to
        with self._lock:
            if cancel_event is not None:
                self._cancel_events.add(cancel_event)
            # only generation requests (in a scheduler run) spend the budget: a health check is never refused for it
            budget_spent = (
                cancel_event is not None and self.token_budget is not None and self.tokens_total >= self.token_budget
            )
        if budget_spent:
            self.stop(BUDGET_SPENT, drain=True)
        with self._lock:
            if self._stop_reason is None:
                self._in_flight += 1
                started_clock = self._waiting_since is None
                if started_clock:
                    self._waiting_since = time.monotonic()
                self._last_call = call
                return started_clock
            self.refused += 1
            cancelled = self._cancelled
        if cancelled and cancel_event is not None:
            cancel_event.set()  # Data Designer's own flag: its loop stops at its next turn, even if a cancel is lost
        raise RefusedByGuard(
            kind=ProviderErrorKind.REQUEST_ADMISSION_TIMEOUT,
            message=f"not sent: dd_assets stopped the stage ({self.stop_reason})",
            provider_name=call.provider,
            model_name=call.model,
        )

    def withdraw_attempt(self, started_clock: bool) -> None:
        """Undo :meth:`before_attempt` for a request that was never sent (a sync call on an async-only client)."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if started_clock and not self._in_flight:
                self._waiting_since = None

    def after_attempt(self, call: ModelCall, error: BaseException | None) -> None:
        """Record how a request ended: a success restarts the stall clock, a retryable failure keeps it running."""
        now = time.monotonic()
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if not self._in_flight:
                self._idle_since = now
            if error is None:
                self._attempts += 1
                self._failures_since_success = 0
                self._waiting_since = now if self._in_flight else None
                return
            if isinstance(error, asyncio.CancelledError):
                if not self._in_flight:
                    self._waiting_since = None
                return
            self._failures_since_success += 1
            self._last_call = call
            self._last_error = describe_error(error)
            self._attempts += 1
            entry = self._failures.setdefault((call, self._last_error), [0, provider_message(error)])
            entry[0] += 1
            if not still_waiting(error) and not nothing_answered(error) and not self._in_flight:
                self._waiting_since = None  # the provider answered; Data Designer retries a few times at most

    def add_tokens(self, tokens: int) -> None:
        """Count a response's tokens; past the budget, stop the stage."""
        with self._lock:
            self.tokens_this_run += tokens
            over = self.token_budget is not None and self.tokens_total > self.token_budget
        if over:
            self.stop(BUDGET_SPENT, drain=True)

    # --- stopping -----------------------------------------------------------------------------------
    def stop(self, reason: str, *, drain: bool = False) -> None:
        """Stop the stage: refuse its further requests and cancel its generation on Data Designer's loop.

        With ``drain`` the requests already in flight (already paid for) may finish first, so a batch they
        complete is kept; the watchdog cancels the generation once none is left, or after ``stall_timeout_s``.
        """
        with self._lock:
            if self._stop_reason is not None:
                return
            self._stop_reason = reason
            self._stopped_at = time.monotonic()
            self.stopped_at_wall = time.time()
            self._draining = drain
        logger.warning("dd_assets stops the stage: %s", self.stop_reason)
        if not drain:
            self._cancel()

    def _cancel(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
        self._send_cancel()

    def _send_cancel(self) -> None:
        """Cancel this stage's scheduler runs on Data Designer's loop, and set Data Designer's own cancel flags."""
        with self._lock:
            self._cancelled_at = time.monotonic()
            schedulers = [(loop, task) for loop, task in self._schedulers if not task.done()]
            events = list(self._cancel_events)
        for event in events:
            event.set()
        for loop, task in schedulers:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop is closed: nothing runs there any more
                pass

    def _cancel_lost(self, now: float) -> bool:
        """A cancel was sent a while ago and a run still goes on (Python 3.11 can lose a cancel inside wait_for)."""
        with self._lock:
            return (
                self._cancelled
                and now - self._cancelled_at >= RECANCEL_AFTER_S
                and any(not task.done() for _, task in self._schedulers)
            )

    def _drained(self, now: float) -> bool:
        with self._lock:
            if not self._draining or self._cancelled:
                return False
            # Data Designer writes a batch the last answer finished on its next loop turn: give it that moment
            idle = self._in_flight == 0 and now - self._idle_since >= DRAIN_GRACE_S
            return idle or now - self._stopped_at >= self.stall_timeout_s

    def check_stall(self, now: float | None = None) -> None:
        """Stop the stage when its model calls have waited ``stall_timeout_s`` without a success."""
        now = time.monotonic() if now is None else now
        with self._lock:
            since = self._waiting_since
            if since is None or self._stop_reason is not None or now - since < self.stall_timeout_s:
                return
            call, error, failures = self._last_call, self._last_error, self._failures_since_success
        waited = now - since
        where = call.describe() if call is not None else "its model calls"
        last = (
            f"last error: {error} ({failures} failed attempt(s) since the last success)" if error else "no answer yet"
        )
        self.stop(
            f"stalled: no model request succeeded for {waited:.1f} s (stall_timeout_s={self.stall_timeout_s:g}) "
            f"on {where}; {last}"
        )

    def failure_report(self) -> str | None:
        """Why this run's model requests failed, the most frequent reason first (``None``: none failed).

        ``"40 of 41 model requests failed: HTTP 400 context_window_exceeded from model alias 'm' (...), 40 times:
        This model's maximum context length is ..."``: what Data Designer leaves to "the warnings above".
        """
        with self._lock:
            failures = sorted(self._failures.items(), key=lambda item: -item[1][0])
            attempts = self._attempts
        if not failures:
            return None
        failed = sum(count for _, (count, _) in failures)
        reasons = [
            f"{kind} from {call.describe()}, {count} time(s){f': {message}' if message else ''}"
            for (call, kind), (count, message) in failures[:2]
        ]
        more = f"; and {len(failures) - 2} other reason(s)" if len(failures) > 2 else ""
        return f"{failed} of {attempts} model requests failed: {'; '.join(reasons)}{more}"

    def budget_report(self) -> str:
        """The tokens used (and by earlier runs) against the budget, as said when the budget stops the stage."""
        earlier = f", {self.tokens_before:,} of them by earlier runs of this work" if self.tokens_before else ""
        return (
            f"token budget spent: {self.tokens_total:,} tokens used{earlier}, token_budget is "
            f"{self.token_budget:,}; no further model requests were sent"
        )

    def _watch(self) -> None:
        period = min(0.25, max(0.05, self.stall_timeout_s / 20))
        written, last_write = self.tokens_total, time.monotonic()
        while not self._done.wait(period):
            try:
                if self.spent_file_dir is not None and time.monotonic() - last_write >= SPENT_WRITE_EVERY_S:
                    last_write = time.monotonic()
                    if self.tokens_total != written:
                        written = self.tokens_total
                        write_tokens_spent(self.spent_file_dir, written)
                self.check_stall()
                now = time.monotonic()
                if self._drained(now):
                    self._cancel()
                elif self._cancel_lost(now):
                    self._send_cancel()
            except Exception as exc:  # noqa: BLE001 - the watchdog must never break the run
                logger.warning("stage guard check failed: %s: %s", type(exc).__name__, exc)


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


def current_guard() -> StageGuard | None:
    stage = CURRENT_STAGE.get()
    return stage.guard if stage is not None else None


class GuardedModelClient(ModelClient):
    """A model client that passes every request attempt through the current stage's :class:`StageGuard`."""

    def __init__(self, inner: ModelClient, call: ModelCall) -> None:
        self._inner = inner
        self.call = call

    @property
    def provider_name(self) -> str:
        return self._inner.provider_name

    def supports_chat_completion(self) -> bool:
        return self._inner.supports_chat_completion()

    def supports_embeddings(self) -> bool:
        return self._inner.supports_embeddings()

    def supports_image_generation(self) -> bool:
        return self._inner.supports_image_generation()

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        await self._inner.aclose()

    def completion(self, request: Any) -> Any:
        return self._guarded(lambda: self._inner.completion(request))

    async def acompletion(self, request: Any) -> Any:
        return await self._aguarded(lambda: self._inner.acompletion(request))

    def embeddings(self, request: Any) -> Any:
        return self._guarded(lambda: self._inner.embeddings(request))

    async def aembeddings(self, request: Any) -> Any:
        return await self._aguarded(lambda: self._inner.aembeddings(request))

    def generate_image(self, request: Any) -> Any:
        return self._guarded(lambda: self._inner.generate_image(request))

    async def agenerate_image(self, request: Any) -> Any:
        return await self._aguarded(lambda: self._inner.agenerate_image(request))

    def _guarded(self, send: Callable[[], _T]) -> _T:
        guard = current_guard()
        if guard is None:
            return count_health_check(send(), self.call)
        started_clock = guard.before_attempt(self.call)
        try:
            result = send()
        except SyncClientUnavailableError:  # Data Designer tries sync first and falls back to async: not a request
            guard.withdraw_attempt(started_clock)
            raise
        except BaseException as exc:
            guard.after_attempt(self.call, exc)
            raise
        guard.after_attempt(self.call, None)
        return count_health_check(result, self.call)

    async def _aguarded(self, send: Callable[[], Awaitable[_T]]) -> _T:
        guard = current_guard()
        if guard is None:
            return count_health_check(await send(), self.call)
        guard.before_attempt(self.call)
        try:
            result = await send()
        except BaseException as exc:
            guard.after_attempt(self.call, exc)
            raise
        guard.after_attempt(self.call, None)
        return count_health_check(result, self.call)


def count_health_check(response: _T, call: ModelCall) -> _T:
    """Add a health check's tokens to the current stage's usage (Data Designer does not track them)."""
    stage = CURRENT_STAGE.get()
    usage = getattr(response, "usage", None)
    if stage is not None and IN_HEALTH_CHECK.get():
        stage.usage.extend_health_check(
            call.model,
            input_tokens=getattr(usage, "input_tokens", None) or 0,
            output_tokens=getattr(usage, "output_tokens", None) or 0,
        )
    return response


class SchedulerStartSink:
    """A Data Designer scheduler event sink that hands each starting generation's task to its stage's guard."""

    def accepts_scheduler_event(self, event_kind: str) -> bool:
        return event_kind == "scheduler_job_started"

    def emit_scheduler_event(self, event: Any) -> None:
        guard = current_guard()
        if guard is None:
            return
        task = asyncio.current_task()
        if task is not None:
            guard.cancel_on_stop(asyncio.get_running_loop(), task)


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
