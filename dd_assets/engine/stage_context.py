"""Which stage the current code runs for, carried through Data Designer's threads and asyncio tasks.

Data Designer runs every ``create()`` on one process-wide event loop. A task created from a stage's thread
inherits that thread's context variables, so whatever a model facade or a log call does on the stage's behalf
can find the stage in :data:`CURRENT_STAGE`, even while other stages run at the same time. dd_assets uses it to
attribute model usage (:class:`StageUsageMeter`) and log lines to the right stage.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from data_designer.engine.models.usage import ModelUsageStats, RequestUsageStats, TokenUsageStats


class StageUsageMeter:
    """Model usage of one stage run, per model name, fed by every request made on the stage's behalf."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: dict[str, ModelUsageStats] = {}
        self._health_checks: dict[str, ModelUsageStats] = {}

    def extend(self, model_name: str, **usage: Any) -> None:
        """Add one request's usage (the keyword arguments of ``ModelUsageStats.extend``)."""
        with self._lock:
            self._by_model.setdefault(model_name, ModelUsageStats()).extend(**usage)

    def extend_health_check(self, model_name: str, input_tokens: int, output_tokens: int) -> None:
        """Add one health-check request (Data Designer does not track those, but the provider bills them)."""
        with self._lock:
            self._health_checks.setdefault(model_name, ModelUsageStats()).extend(
                token_usage=TokenUsageStats(input_tokens=input_tokens, output_tokens=output_tokens),
                request_usage=RequestUsageStats(successful_requests=1, failed_requests=0),
            )

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Tokens and requests per model of the stage's generation requests, JSON-ready."""
        return self._summary(self._by_model)

    def health_checks_as_dict(self) -> dict[str, dict[str, int]]:
        """Tokens and requests per model of the health checks this stage ran, JSON-ready."""
        return self._summary(self._health_checks)

    def _summary(self, by_model: dict[str, ModelUsageStats]) -> dict[str, dict[str, int]]:
        with self._lock:
            stats = {name: usage.model_copy(deep=True) for name, usage in by_model.items()}
        return {
            name: {
                "input_tokens": usage.token_usage.input_tokens,
                "output_tokens": usage.token_usage.output_tokens,
                "total_tokens": usage.token_usage.input_tokens + usage.token_usage.output_tokens,
                "successful_requests": usage.request_usage.successful_requests,
                "failed_requests": usage.request_usage.failed_requests,
            }
            for name, usage in sorted(stats.items())
            if usage.has_usage
        }


@dataclass
class StageContext:
    """The stage a piece of work is done for."""

    label: str  # "workflow/stage"
    usage: StageUsageMeter = field(default_factory=StageUsageMeter)
    guard: Any = None  # the stage run's dd_assets.engine.stage_guard.StageGuard, while it generates
    token_statistics_skipped: bool = False  # the profiler left the LLM columns' token statistics out (they are off)


CURRENT_STAGE: contextvars.ContextVar[StageContext | None] = contextvars.ContextVar("dd_assets_stage", default=None)
IN_HEALTH_CHECK: contextvars.ContextVar[bool] = contextvars.ContextVar("dd_assets_health_check", default=False)
"""True while a model health check runs (its requests are billed like any other, so the stage counts them)."""


@contextlib.contextmanager
def running_stage(stage: StageContext) -> Iterator[StageContext]:
    """Within the block (and in every task or thread started from it), :data:`CURRENT_STAGE` is ``stage``."""
    token = CURRENT_STAGE.set(stage)
    try:
        yield stage
    finally:
        CURRENT_STAGE.reset(token)
