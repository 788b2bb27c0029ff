"""DataDesignerResource: one DataDesigner and one ModelRegistry per process, shared by every stage.

Why an override: Data Designer (0.9 and 1.0) builds a new ``ModelRegistry`` inside every ``create()``
(``DataDesigner._create_resource_provider``), so each stage would repeat its model health checks and
open new HTTP clients. :class:`SharedRegistryDataDesigner` overrides only that method: it lets Data
Designer build the resource provider as usual, then swaps in one process-wide
:class:`SharedModelRegistry` into which the model configs each stage's columns use are registered. The
registry runs a health check once per alias per process and refuses an alias that two stages define
differently. The override reaches into Data Designer's private surface: the supported versions and every private
part dd_assets relies on are listed in :mod:`dd_assets.engine.data_designer_surface`, and checked when dd_assets is imported.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import hashlib
import json
import logging
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import dagster as dg
from data_designer.config.config_builder import DataDesignerConfigBuilder
from data_designer.config.models import ModelConfig, ModelProvider
from data_designer.config.run_config import RunConfig
from data_designer.config.utils.constants import MANAGED_ASSETS_PATH
from data_designer.engine.models.clients.adapters.http_model_client import ClientConcurrencyMode
from data_designer.engine.models.clients.model_request_executor import ModelRequestExecutor
from data_designer.engine.models.registry import ModelRegistry
from data_designer.engine.models.usage import ModelUsageStats
from data_designer.engine.observability import fanout_scheduler_event_sinks
from data_designer.engine.resources.person_reader import LocalPersonReader
from data_designer.engine.resources.resource_provider import ResourceProvider
from data_designer.interface.data_designer import DataDesigner
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from dd_assets.engine.data_designer_surface import (  # noqa: F401 - the compatibility names, importable from here as before
    EXPECTED_CREATE_RESOURCE_PROVIDER_PARAMETERS,
    REGISTRY_METHODS_USED,
    SUPPORTED_DATA_DESIGNER,
    DataDesignerCompatibilityError,
    check_data_designer_compatibility,
    compatibility_problems,
)
from dd_assets.engine.dd_home import not_seeding_home
from dd_assets.engine.stage_context import CURRENT_STAGE, IN_HEALTH_CHECK
from dd_assets.engine.stage_guard import (
    DEFAULT_STALL_TIMEOUT_S,
    GuardedModelClient,
    ModelCall,
    SchedulerStartSink,
    current_guard,
    refused_by_a_guard,
)
from dd_assets.spec.default_models import default_model_providers
from dd_assets.spec.known_fields import refuse_unknown_fields
from dd_assets.spec.secrets import (
    LiteralSecretError,
    env_values,
    env_var_names_to_str,
    literal_credentials,
    named_credentials,
    require_env_var_name,
    resolve_env_var,
    resolve_named_credentials,
)
from dd_assets.spec.stage_models import used_model_configs

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


UNUSED_ARTIFACTS_DIR = Path(tempfile.gettempdir()) / "dd_assets" / "data-designer-default-artifacts"
"""Where a ``DataDesigner`` would put artifacts by default. Every stage passes its own work directory, so
nothing is written here; it only keeps Data Designer from creating ``./artifacts`` in the working directory."""


class SharedRegistryDataDesigner(DataDesigner):
    """A ``DataDesigner`` whose ``create()`` calls all use one :class:`SharedModelRegistry`."""

    def __init__(self, *args: Any, token_statistics: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("artifact_path", UNUSED_ARTIFACTS_DIR)
        # Data Designer's own reader insists the managed-assets folder exists (it would create it in its home); the
        # same reader built directly reads that folder only when a stage samples persons.
        kwargs.setdefault("person_reader", LocalPersonReader(MANAGED_ASSETS_PATH))
        with not_seeding_home():  # nothing is written into ~/.data-designer (dd_assets.engine.dd_home)
            super().__init__(*args, **kwargs)
        self._registry_lock = threading.Lock()
        self._shared_registry: SharedModelRegistry | None = None
        self.token_statistics = token_statistics
        install_token_statistics_switch()

    def create(self, *args: Any, **kwargs: Any) -> Any:
        """Data Designer's ``create()``, its profiler counting tokens only when this DataDesigner's setting says so."""
        ignore_data_designers_own_deprecations()
        token = _TOKEN_STATISTICS.set(self.token_statistics)
        try:
            return super().create(*args, **kwargs)
        finally:
            _TOKEN_STATISTICS.reset(token)

    def preview(self, *args: Any, **kwargs: Any) -> Any:
        """Data Designer's ``preview()``, with this DataDesigner's token-statistics setting."""
        ignore_data_designers_own_deprecations()
        token = _TOKEN_STATISTICS.set(self.token_statistics)
        try:
            return super().preview(*args, **kwargs)
        finally:
            _TOKEN_STATISTICS.reset(token)

    @property
    def shared_registry(self) -> SharedModelRegistry:
        """The process-wide registry (built on first use, empty until stages register their models)."""
        with self._registry_lock:
            if self._shared_registry is None:
                provider = super()._create_resource_provider(
                    "shared-model-registry", DataDesignerConfigBuilder([]), artifact_path=self.artifact_path
                )
                self._shared_registry = SharedModelRegistry.adopt(provider.model_registry)
            return self._shared_registry

    def register_stage_models(self, builder: DataDesignerConfigBuilder, owner: str) -> None:
        """Register the model configs a stage's columns use before it runs (raises on a conflicting alias)."""
        self.shared_registry.register_stage_models(used_model_configs(builder), owner)

    def _create_resource_provider(
        self, dataset_name: str, config_builder: DataDesignerConfigBuilder, **kwargs: Any
    ) -> ResourceProvider:
        kwargs.setdefault("artifact_path", self.artifact_path)
        provider = super()._create_resource_provider(dataset_name, config_builder, **kwargs)
        if kwargs.get("client_concurrency_mode", ClientConcurrencyMode.ASYNC) != ClientConcurrencyMode.ASYNC:
            return provider  # get_models() wants sync clients: leave it Data Designer's own registry
        registry = self.shared_registry
        registry.register_stage_models(used_model_configs(config_builder), owner=f"create({dataset_name!r})")
        provider.model_registry = registry
        # The stage's guard learns which scheduler run to cancel when it stops the stage. model_copy, because
        # validating the field checks isinstance against a Protocol that is not runtime-checkable.
        sink = fanout_scheduler_event_sinks(provider.scheduler_event_sink, SchedulerStartSink())
        return provider.model_copy(update={"scheduler_event_sink": sink})


# One DataDesigner per resource configuration and process, so every stage of a process shares its registry, health
# checks and admission; the least recently used configurations are dropped beyond a few (a notebook or test process
# building many resources must not keep every one of them alive).
_DATA_DESIGNERS: collections.OrderedDict[str, SharedRegistryDataDesigner] = collections.OrderedDict()
_DATA_DESIGNERS_LOCK = threading.Lock()
MAX_DATA_DESIGNERS = 16


def ignore_data_designers_own_deprecations() -> None:
    """Hide the pandas deprecation Data Designer's drop-columns processor triggers (``inplace=True``) in every run.

    Only that warning, only from that module of Data Designer. Added to the front of the filters on every call,
    never removed: ``warnings.catch_warnings`` is not thread-safe, and stages call Data Designer from threads.
    """
    warnings.filterwarnings(
        "ignore",
        message=r"The inplace keyword in DataFrame\.drop is deprecated",
        category=DeprecationWarning,
        module=r"data_designer\.engine\.processing\.processors\.drop_columns",
    )


_TOKEN_STATISTICS: contextvars.ContextVar[bool] = contextvars.ContextVar("dd_assets_token_statistics", default=False)


def _count_tokens_if_enabled(text: str) -> int:
    """Data Designer's profiler counts tokens through this: the setting of the DataDesigner running now decides."""
    if not _TOKEN_STATISTICS.get():
        raise RuntimeError(
            "token statistics are off (offline default: the tokenizer is downloaded from the internet); "
            "set DataDesignerResource(token_statistics=True) to turn them on"
        )
    from data_designer.engine.utils.token_counting import count_text_tokens

    return count_text_tokens(text)


def install_token_statistics_switch() -> None:
    """Route Data Designer's tiktoken-based token statistics through a per-call switch (idempotent).

    Data Designer's profiler counts prompt and output tokens with tiktoken's ``cl100k_base``, which downloads its
    vocabulary from the internet on first use. The module function is replaced once; whether it counts is decided
    per ``create()`` / ``preview()`` by the setting of the resource whose DataDesigner runs it (a context variable,
    so two resources, and stages running at once in threads, each keep their own). Off, the profiler records those
    statistics as not calculated instead of reaching the network.
    """
    from data_designer.engine.analysis import column_statistics
    from data_designer.engine.analysis.utils import column_statistics_calculations as calculations

    calculations.count_text_tokens = _count_tokens_if_enabled
    # Off, the LLM columns' token statistics are not attempted at all: attempted, Data Designer logs two warnings
    # per LLM column for the refusal above. A stage run says once that they are off (StageRun._generate).
    column_statistics.calculate_token_stats = _token_stats_if_enabled


_TOKEN_STATISTIC_KEYS = tuple(
    f"{side}_tokens_{stat}" for side in ("input", "output") for stat in ("mean", "median", "stddev")
)


def _token_stats_if_enabled(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Data Designer's ``calculate_token_stats`` when token statistics are on; else each one "not calculated"."""
    from data_designer.config.analysis.column_statistics import MissingValue
    from data_designer.engine.analysis.utils import column_statistics_calculations as calculations

    if _TOKEN_STATISTICS.get():
        return calculations.calculate_token_stats(*args, **kwargs)
    stage = CURRENT_STAGE.get()
    if stage is not None:
        stage.token_statistics_skipped = True
    return dict.fromkeys(_TOKEN_STATISTIC_KEYS, MissingValue.CALCULATION_FAILED)


class DataDesignerResource(dg.ConfigurableResource):
    """The shared Data Designer of a process (resource key ``"data_designer"``).

    Attributes:
        model_providers: providers in Data Designer's ``ModelProvider`` shape (``name``, ``endpoint``,
            ``provider_type``, ``api_key``, ...). ``api_key`` is the *name* of an environment variable (upper
            case, e.g. ``"NVIDIA_API_KEY"``) or ``dg.EnvVar("NAME")``; it is read in the process that runs the
            stage. A literal key is refused: Dagster would store it in run snapshots and show it in its UI.
            ``None`` uses Data Designer's own default providers.
        run_config: Data Designer ``RunConfig`` fields (``buffer_size``, ``disable_early_shutdown``, ...),
            applied once per process. ``otel_metrics_port`` defaults to ``None`` (no port is bound).
        token_statistics: compute tiktoken token statistics (downloads a tokenizer; off by default).
        setup_hint: appended to "provider not configured" errors, to tell users how to configure one.
        progress_every_s: while a stage generates, report its progress to the run's event log this often
            (batches, records, requests, rate, time left); ``0`` turns it off.
        prices: dollars per million input and output tokens, keyed by model name or model alias
            (``{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}``); each stage then records ``dd_assets/cost_usd``.
        stall_timeout_s: a stage whose model calls wait this long without one success (every request answered
            with HTTP 429, say) fails, keeping its finished batches; ``Stage(stall_timeout_s=...)`` overrides it.
    """

    # Validation errors never echo the input: it may hold a provider's key.
    model_config = ConfigDict(hide_input_in_errors=True)

    # Free-form mappings take ``Any | None`` values: Dagster's config schema turns ``dict[str, Any]`` into a map whose
    # members may not be null, and a keyless provider (``"api_key": None``) then fails every load with a CheckError.
    model_providers: list[dict[str, Any | None]] | None = None
    run_config: dict[str, Any | None] = Field(default_factory=dict)
    token_statistics: bool = False
    setup_hint: str | None = None
    progress_every_s: float = 5.0
    prices: dict[str, dict[str, float]] = Field(default_factory=dict)
    stall_timeout_s: float = Field(default=DEFAULT_STALL_TIMEOUT_S, gt=0)

    def __init__(self, **data: Any) -> None:
        refuse_unknown_fields(type(self), data)
        providers = data.get("model_providers")
        if isinstance(providers, list):
            # dg.EnvVar("NAME") becomes the name, so Dagster never resolves the key into the resource's config.
            # The same for credentials named in extra_headers / extra_body, at any depth.
            data["model_providers"] = [env_var_names_to_str(p) if isinstance(p, dict) else p for p in providers]
        super().__init__(**data)

    @classmethod
    def configure_at_launch(cls, **kwargs: Any) -> Any:
        """As Dagster's, refusing unknown fields now rather than when a run starts."""
        refuse_unknown_fields(cls, kwargs)
        return super().configure_at_launch(**kwargs)

    @field_validator("prices")
    @classmethod
    def _check_prices(cls, prices: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        from dd_assets.engine.costs import check_prices

        return check_prices(prices)

    @field_validator("model_providers")
    @classmethod
    def _check_model_providers(
        cls, providers: list[dict[str, Any | None]] | None
    ) -> list[dict[str, Any | None]] | None:
        for index, provider in enumerate(providers or []):
            check_provider(index, provider)
        return providers

    def providers(self) -> list[ModelProvider]:
        """The configured providers as Data Designer objects (Data Designer's defaults when none, never written)."""
        if self.model_providers is None:
            return default_model_providers()
        return [ModelProvider.model_validate(p) for p in self.model_providers]

    def runtime_providers(self) -> list[ModelProvider]:
        """:meth:`providers` with the credentials named in ``extra_headers`` / ``extra_body`` read from the
        environment (Data Designer resolves ``api_key`` itself). Only for the process that sends requests."""
        if self.model_providers is None:
            return self.providers()
        return [
            ModelProvider.model_validate(
                {
                    **p,
                    **{
                        field: resolve_named_credentials(p[field], f"model provider {p.get('name')!r}: {field}")
                        for field in CREDENTIAL_FIELDS
                        if p.get(field)
                    },
                }
            )
            for p in self.model_providers
        ]

    def check_provider_keys(self, provider_names: set[str]) -> None:
        """Fail clearly, before any request, when a variable a provider names (``api_key``, a header) is not set."""
        if self.model_providers is None:
            return  # Data Designer's defaults: its own messages apply
        for provider in self.providers():
            if provider.name in provider_names and provider.api_key:
                resolve_env_var(provider.api_key, f"the api_key of model provider {provider.name!r}")
        for provider in self.model_providers:
            if provider.get("name") in provider_names:
                for field in CREDENTIAL_FIELDS:
                    resolve_named_credentials(provider.get(field), f"model provider {provider.get('name')!r}: {field}")

    def data_designer_run_config(self) -> RunConfig:
        """The ``RunConfig`` applied to the shared ``DataDesigner``, with offline-safe defaults."""
        return RunConfig.model_validate({"otel_metrics_port": None, **self.run_config})

    def _cache_key(self) -> str:
        payload = [self.model_providers, self.run_config, self.token_statistics]
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def get_data_designer(self) -> SharedRegistryDataDesigner:
        """The process-wide ``DataDesigner`` for this configuration (one registry, one set of clients)."""
        key = self._cache_key()
        with _DATA_DESIGNERS_LOCK:
            data_designer = _DATA_DESIGNERS.get(key)
            if data_designer is None:
                data_designer = SharedRegistryDataDesigner(
                    model_providers=self.runtime_providers(),
                    auto_configure_logging=False,
                    token_statistics=self.token_statistics,
                )
                data_designer.set_run_config(self.data_designer_run_config())
                _DATA_DESIGNERS[key] = data_designer
                while len(_DATA_DESIGNERS) > MAX_DATA_DESIGNERS:
                    _DATA_DESIGNERS.popitem(last=False)
            _DATA_DESIGNERS.move_to_end(key)
            return data_designer

    def secret_values(self) -> list[str]:
        """Resolved API key and named header / body credential values, so messages can be redacted."""
        names = [provider.api_key for provider in self.providers()]
        for provider in self.model_providers or []:
            names += [name for field in CREDENTIAL_FIELDS for name in named_credentials(provider.get(field))]
        return env_values(names)


def check_provider(index: int, provider: Any) -> None:
    """Validate one ``model_providers`` entry without ever repeating its values (they may hold a key)."""
    where = f"model_providers[{index}]"
    if not isinstance(provider, dict):
        raise ValueError(f"{where} must be a mapping in Data Designer's ModelProvider shape")
    name = provider.get("name")
    if isinstance(name, str):
        where += f" ({name!r})"
    try:
        ModelProvider.model_validate(provider)
    except ValidationError as exc:
        problems = [
            f"field {'.'.join(str(p) for p in error['loc']) or '?'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise ValueError(f"{where} is not a valid ModelProvider: {'; '.join(problems)}") from None
    if provider.get("api_key") is not None:
        try:
            require_env_var_name(provider["api_key"], f"{where}: api_key")
        except LiteralSecretError as exc:
            raise ValueError(str(exc)) from None
    found = literal_credentials({k: v for k, v in provider.items() if k not in ("name", "api_key", "provider_type")})
    if found:
        raise ValueError(
            f"{where}: {'; '.join(found)}. That would put a credential into Dagster's config and UI (the value is "
            "not repeated here): give the provider's key as api_key, the name of an environment variable; a header "
            "or extra_body entry under a credential's name (Authorization, Cookie, X-Api-Key, token, ...) as the "
            "name of an environment variable or dg.EnvVar('NAME'), read where the stage runs; and no credentials "
            "in the endpoint URL"
        )


CREDENTIAL_FIELDS = ("extra_headers", "extra_body")
"""The ``ModelProvider`` fields whose credential-named entries dd_assets reads from environment variables."""
