"""One ModelRegistry shared by every ``create()`` of a process, its usage counted per stage and its requests guarded.

Data Designer (0.9 and 1.0) builds a new ``ModelRegistry`` inside every ``create()``, so each stage would repeat its
model health checks and open new HTTP clients. :class:`SharedModelRegistry` takes over one registry Data Designer
built and holds the model configs every stage's columns use: a health check runs once per alias per process, and an
alias two stages define differently is refused. Its facades route their usage to the current stage
(:class:`StageRoutedUsageStats`) and pass each request attempt through the stage's guard (:func:`guard_requests`).
The private parts of Data Designer this reaches into are listed in :mod:`dd_assets.engine.data_designer_surface`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from data_designer.config.models import ModelConfig
from data_designer.engine.models.clients.model_request_executor import ModelRequestExecutor
from data_designer.engine.models.registry import ModelRegistry
from data_designer.engine.models.usage import ModelUsageStats
from pydantic import PrivateAttr

from dd_assets.engine.data_designer_surface import DataDesignerCompatibilityError
from dd_assets.engine.guard_hooks import GuardedModelClient, ModelCall, current_guard, refused_by_a_guard
from dd_assets.engine.stage_context import CURRENT_STAGE, IN_HEALTH_CHECK

logger = logging.getLogger(__name__)


class ModelAliasConflictError(ValueError):
    """Two stages define one model alias differently."""


class StageRoutedUsageStats(ModelUsageStats):
    """The usage counters of a shared model facade that also add each request to the current stage's meter.

    Stages share one facade per alias (and so its counters), and may run at the same time: a difference of the
    shared counters would mix them. Each request's usage is added where it is made, to the stage in
    :data:`dd_assets.engine.stage_context.CURRENT_STAGE`.
    """

    _model_name: str = PrivateAttr(default="")

    @classmethod
    def routing(cls, stats: ModelUsageStats, model_name: str) -> StageRoutedUsageStats:
        routed = cls.model_validate(stats.model_dump())
        routed._model_name = model_name
        return routed

    def extend(self, **usage: Any) -> None:
        super().extend(**usage)
        stage = CURRENT_STAGE.get()
        if stage is not None:
            stage.usage.extend(self._model_name, **usage)
            tokens = usage.get("token_usage")
            if stage.guard is not None and tokens is not None:
                stage.guard.add_tokens(tokens.input_tokens + tokens.output_tokens)


def guard_requests(facade: Any, alias: str) -> None:
    """Pass every request attempt of a shared facade through the current stage's guard (stall and budget).

    The guard goes around the HTTP adapter inside Data Designer's ``ModelRequestExecutor``, so it sees each retry.
    """
    client = getattr(facade, "_client", None)
    if not isinstance(client, ModelRequestExecutor) or getattr(client, "_inner", None) is None:
        raise DataDesignerCompatibilityError(
            "Data Designer's ModelFacade no longer sends requests through a ModelRequestExecutor; dd_assets cannot "
            "enforce stall deadlines and token budgets"
        )
    if not isinstance(client._inner, GuardedModelClient):
        provider = facade.model_provider
        call = ModelCall(alias=alias, model=facade.model_name, provider=provider.name, endpoint=provider.endpoint)
        client._inner = GuardedModelClient(client._inner, call)


class SharedModelRegistry(ModelRegistry):
    """A ``ModelRegistry`` shared by every ``create()`` of a process.

    Adds to Data Designer's registry: conflict-checked registration, and health checks that run once
    per alias per process (a failed check is retried on the next stage).
    """

    @classmethod
    def adopt(cls, registry: ModelRegistry) -> SharedModelRegistry:
        """Take over a registry Data Designer built (same facade factory, request admission, retries), emptied.

        Data Designer fills a registry built from an empty config with its default models; the shared one
        starts empty and holds only what stages register.
        """
        shared = cls.__new__(cls)
        shared.__dict__.update(registry.__dict__)
        for attribute in ("_model_configs", "_models"):
            if not isinstance(getattr(shared, attribute, None), dict):
                raise DataDesignerCompatibilityError(
                    f"Data Designer's ModelRegistry has no {attribute} mapping; dd_assets cannot share it"
                )
        shared._model_configs = {}
        shared._models = {}
        shared._lock = threading.RLock()
        shared._healthy_aliases = set()
        shared._checks_in_flight = {}
        shared._alias_owners = {}
        return shared

    def register_stage_models(self, model_configs: list[ModelConfig], owner: str) -> None:
        """Register a stage's model configs; an alias already defined differently is an error."""
        with self._lock:
            new = []
            for config in model_configs:
                existing = self._model_configs.get(config.alias)
                if existing is None:
                    new.append(config)
                    self._alias_owners[config.alias] = owner
                elif existing.model_dump(mode="json") != config.model_dump(mode="json"):
                    raise ModelAliasConflictError(
                        f"{owner}: model alias {config.alias!r} is defined differently by "
                        f"{self._alias_owners.get(config.alias, 'another stage')} in this process "
                        f"(model {existing.model!r} on provider {existing.provider!r} vs "
                        f"model {config.model!r} on provider {config.provider!r}); give one of them another alias"
                    )
            if new:
                self.register_model_configs(new)

    def get_model(self, *, model_alias: str) -> Any:
        """The shared facade of an alias (built once, under a lock), counting usage per stage."""
        with self._lock:
            facade = super().get_model(model_alias=model_alias)
            if not isinstance(getattr(facade, "_usage_stats", None), ModelUsageStats):
                raise DataDesignerCompatibilityError("Data Designer's ModelFacade keeps no _usage_stats")
            if not isinstance(facade._usage_stats, StageRoutedUsageStats):
                facade._usage_stats = StageRoutedUsageStats.routing(facade._usage_stats, facade.model_name)
                guard_requests(facade, model_alias)
            return facade

    def _aliases_to_check(self, model_aliases: list[str]) -> list[str]:
        with self._lock:
            todo = [alias for alias in model_aliases if alias not in self._healthy_aliases]
        skipped = sorted(set(model_aliases) - set(todo))
        if skipped:
            logger.info("🩺 Health checks already passed in this process for: %s", ", ".join(skipped))
        return todo

    def run_health_check(self, model_aliases: list[str]) -> None:
        todo = self._aliases_to_check(model_aliases)
        if todo:
            token = IN_HEALTH_CHECK.set(True)
            try:
                super().run_health_check(todo)
            finally:
                IN_HEALTH_CHECK.reset(token)
            with self._lock:
                self._healthy_aliases.update(todo)

    async def arun_health_check(self, model_aliases: list[str]) -> None:
        # Stages starting together must not each check an alias: the first checks it, the others wait for that
        # check (all of them run on Data Designer's one event loop).
        loop = asyncio.get_running_loop()
        guard, task = current_guard(), asyncio.current_task()
        if guard is not None and task is not None:
            guard.cancel_on_stop(loop, task)  # the stall deadline covers the health check (no scheduler runs yet)
        todo, waits = [], []
        with self._lock:
            for alias in self._aliases_to_check(model_aliases):
                running = self._checks_in_flight.get(alias)
                if running is not None and running.get_loop() is loop:
                    waits.append((alias, running))
                else:
                    self._checks_in_flight[alias] = loop.create_future()
                    todo.append(alias)
        try:
            if todo:
                token = IN_HEALTH_CHECK.set(True)
                try:
                    await super().arun_health_check(todo)
                finally:
                    IN_HEALTH_CHECK.reset(token)
                with self._lock:
                    self._healthy_aliases.update(todo)
        except BaseException as exc:
            self._settle_checks(todo, exc)
            raise
        self._settle_checks(todo, None)
        for alias, check in waits:
            try:
                await asyncio.shield(check)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # this stage is being cancelled itself
                await self.arun_health_check([alias])  # the stage that checked was cancelled: check for ourselves
            except Exception as exc:
                if not refused_by_a_guard(exc):
                    raise  # the provider's own answer holds for every stage
                await self.arun_health_check([alias])  # the other stage's guard refused its request: not ours

    def _settle_checks(self, aliases: list[str], error: BaseException | None) -> None:
        with self._lock:
            for alias in aliases:
                check = self._checks_in_flight.pop(alias, None)
                if check is None or check.done():
                    continue
                if error is None:
                    check.set_result(None)
                else:
                    check.set_exception(error)
                    check.exception()  # marks it retrieved: a failure with no waiter is not "never retrieved"
