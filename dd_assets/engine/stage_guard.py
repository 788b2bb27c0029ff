"""Stall deadline and token budget of a running stage: stop sending requests, stop Data Designer, keep finished batches.

A provider that answers every request with HTTP 429 makes Data Designer wait forever: its scheduler keeps
rate-limited cells for later and retries them without end. And nothing stops a stage that spends far more tokens
than intended. A :class:`StageGuard` watches one stage run's model calls and stops the stage when

- **it stalls**: its model calls have been waiting ``stall_timeout_s`` with no success: a request in flight waits,
  and so does a record rate-limited with 429 (Data Designer retries those without end) or one whose request got no
  answer at all (a refused connection, a timeout: a provider that died); a success restarts the clock, or
- **it passes its budget**: the tokens it used, with those of earlier runs of the same unfinished work (kept in
  the work directory, :mod:`dd_assets.engine.tokens_spent`), exceed ``token_budget``.

How it stops (Data Designer 0.9 and 1.0, read in ``engine/models/clients/model_request_executor.py`` and
``engine/dataset_builders/async_scheduler.py``):

- every model attempt passes :class:`~dd_assets.engine.guard_hooks.GuardedModelClient`, set around the HTTP
  adapter *inside* Data Designer's ``ModelRequestExecutor``, so each retry is seen and, once the stage is stopped,
  refused before it is sent. The refusal is a retryable error, so Data Designer keeps the cell for later instead of
  dropping its row into a batch that would then be written short;
- the stage's scheduler run (found by a scheduler event sink when it starts) and its model health check (which runs
  before the scheduler, as its own task) are cancelled on Data Designer's event loop, as Data Designer itself does
  on Ctrl-C, and Data Designer's own cancel flag of that run is set (the watchdog sends the cancel again should
  Python lose it). Finished batches are already on disk; the batches in progress are
  discarded, so the next materialization resumes exactly the unfinished ones.

The guard of the current stage is reached through :data:`dd_assets.engine.stage_context.CURRENT_STAGE`, so stages
running side by side on the shared Data Designer each have their own deadline and budget.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

from data_designer.engine.context import current_run_cancel_event
from data_designer.engine.models.clients.errors import ProviderErrorKind

from dd_assets.engine.guard_hooks import ModelCall, RefusedByGuard
from dd_assets.engine.request_failures import FailureTally, nothing_answered, still_waiting
from dd_assets.engine.run_canceller import RunCanceller
from dd_assets.engine.token_budget import BUDGET_SPENT, TokenBudget
from dd_assets.engine.tokens_spent import TokensSpentRecorder

logger = logging.getLogger(__name__)

DEFAULT_STALL_TIMEOUT_S = 300.0
DRAIN_GRACE_S = 2.0


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
        self.budget = TokenBudget(token_budget, tokens_before)
        self.failures = FailureTally()  # read and written under self._lock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._waiting_since: float | None = None
        self._last_call: ModelCall | None = None
        self._stop_reason: str | None = None
        self._stopped_at = 0.0
        self._draining = False  # stopped, but the requests in flight may still finish (and be counted)
        self.stopped_at_wall = 0.0  # time.time() of the stop: batches written since may be short
        self._idle_since = 0.0  # when the last request in flight ended
        self.refused = 0  # requests refused after the stop
        self._runs = RunCanceller()
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
        return self.budget.already_spent

    @property
    def token_budget(self) -> int | None:
        return self.budget.limit

    @token_budget.setter
    def token_budget(self, limit: int | None) -> None:
        self.budget.limit = limit

    @property
    def tokens_before(self) -> int:
        return self.budget.tokens_before

    @property
    def tokens_total(self) -> int:
        return self.budget.tokens_total

    def budget_report(self) -> str:
        """The tokens used (and by earlier runs) against the budget, as said when the budget stops the stage."""
        return self.budget.report()

    def failure_report(self) -> str | None:
        """Why this run's model requests failed, the most frequent reason first (``None``: none failed)."""
        with self._lock:
            return self.failures.report()

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
        self._runs.forget_tasks()

    # --- hooks called on Data Designer's side -------------------------------------------------------
    def cancel_on_stop(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
        """A task of this stage waiting on a provider (a generation's scheduler run, a health check) started on
        Data Designer's loop: the task to cancel when stopping, so no wait outlasts the stall deadline."""
        self._runs.add_task(loop, task)

    def before_attempt(self, call: ModelCall) -> bool:
        """Refuse a request of a stopped stage, or of one whose budget is spent; else count it in flight.

        Returns whether this attempt started the stall clock (for :meth:`withdraw_attempt`).
        """
        cancel_event = current_run_cancel_event.get()  # the scheduler run this request belongs to
        if cancel_event is not None:
            self._runs.add_cancel_event(cancel_event)
        # only generation requests (in a scheduler run) spend the budget: a health check is never refused for it
        if cancel_event is not None and self.budget.exhausted:
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
        if self._runs.cancelled and cancel_event is not None:
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
                self.failures.success()
                self._waiting_since = now if self._in_flight else None
                return
            if isinstance(error, asyncio.CancelledError):
                if not self._in_flight:
                    self._waiting_since = None
                return
            self._last_call = call
            self.failures.failure(call, error)
            if not still_waiting(error) and not nothing_answered(error) and not self._in_flight:
                self._waiting_since = None  # the provider answered; Data Designer retries a few times at most

    def add_tokens(self, tokens: int) -> None:
        """Count a response's tokens; past the budget, stop the stage."""
        if self.budget.add(tokens):
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
            self._runs.cancel()

    def _drained(self, now: float) -> bool:
        with self._lock:
            if not self._draining or self._runs.cancelled:
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
            call, error, failures = self._last_call, self.failures.last_error, self.failures.failures_since_success
        waited = now - since
        where = call.describe() if call is not None else "its model calls"
        last = (
            f"last error: {error} ({failures} failed attempt(s) since the last success)" if error else "no answer yet"
        )
        self.stop(
            f"stalled: no model request succeeded for {waited:.1f} s (stall_timeout_s={self.stall_timeout_s:g}) "
            f"on {where}; {last}"
        )

    def _watch(self) -> None:
        period = min(0.25, max(0.05, self.stall_timeout_s / 20))
        spent = None if self.spent_file_dir is None else TokensSpentRecorder(self.spent_file_dir, self.tokens_total)
        while not self._done.wait(period):
            try:
                if spent is not None:
                    spent.record(self.tokens_total)
                self.check_stall()
                now = time.monotonic()
                if self._drained(now):
                    self._runs.cancel()
                elif self._runs.lost(now):
                    self._runs.send()
            except Exception as exc:  # noqa: BLE001 - the watchdog must never break the run
                logger.warning("stage guard check failed: %s: %s", type(exc).__name__, exc)
