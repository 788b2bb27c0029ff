"""Where a stage's guard meets Data Designer: each model request attempt, and each scheduler run that starts.

:class:`GuardedModelClient` is set around the HTTP adapter inside Data Designer's ``ModelRequestExecutor``, so the
guard of the current stage (:func:`current_guard`) sees every attempt, retries included, and refuses those of a
stopped stage with :class:`RefusedByGuard`. :class:`SchedulerStartSink` hands each starting scheduler run to its
stage's guard, to cancel when the guard stops the stage. The guard itself is
:class:`dd_assets.engine.stage_guard.StageGuard`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from data_designer.engine.models.clients.base import ModelClient
from data_designer.engine.models.clients.errors import ProviderError, SyncClientUnavailableError

from dd_assets.engine.stage_context import CURRENT_STAGE, IN_HEALTH_CHECK

if TYPE_CHECKING:
    from dd_assets.engine.stage_guard import StageGuard

_T = TypeVar("_T")


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
