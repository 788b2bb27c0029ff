"""DataDesignerResource: one DataDesigner and one ModelRegistry per process, shared by every stage.

Why an override: Data Designer 0.9.x builds a new ``ModelRegistry`` inside every ``create()``
(``DataDesigner._create_resource_provider``), so each stage would repeat its model health checks and
open new HTTP clients. :class:`SharedRegistryDataDesigner` overrides only that method: it lets Data
Designer build the resource provider as usual, then swaps in one process-wide
:class:`SharedModelRegistry` into which each stage's model configs are registered. The registry runs
a health check once per alias per process and refuses an alias that two stages define differently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from typing import Any

import dagster as dg
from data_designer.config.config_builder import DataDesignerConfigBuilder
from data_designer.config.default_model_settings import get_default_providers
from data_designer.config.models import ModelConfig, ModelProvider
from data_designer.config.run_config import RunConfig
from data_designer.engine.models.clients.adapters.http_model_client import ClientConcurrencyMode
from data_designer.engine.models.registry import ModelRegistry
from data_designer.engine.models.usage import ModelUsageStats
from data_designer.engine.resources.resource_provider import ResourceProvider
from data_designer.interface.data_designer import DataDesigner
from pydantic import Field

logger = logging.getLogger(__name__)


class ModelAliasConflictError(ValueError):
    """Two stages define one model alias differently."""


class SharedModelRegistry(ModelRegistry):
    """A ``ModelRegistry`` shared by every ``create()`` of a process.

    Adds to Data Designer's registry: conflict-checked registration, and health checks that run once
    per alias per process (a failed check is retried on the next stage).
    """

    @classmethod
    def adopt(cls, registry: ModelRegistry) -> SharedModelRegistry:
        """Take over a registry Data Designer built (same facade factory, request admission, retries)."""
        shared = cls.__new__(cls)
        shared.__dict__.update(registry.__dict__)
        shared._lock = threading.RLock()
        shared._healthy_aliases = set()
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
            super().run_health_check(todo)
            with self._lock:
                self._healthy_aliases.update(todo)

    async def arun_health_check(self, model_aliases: list[str]) -> None:
        todo = self._aliases_to_check(model_aliases)
        if todo:
            await super().arun_health_check(todo)
            with self._lock:
                self._healthy_aliases.update(todo)

    def usage_snapshot(self) -> dict[str, ModelUsageStats]:
        """Usage counters now; pass to :meth:`usage_since` after a create."""
        return self.get_model_usage_snapshot()

    def usage_since(self, snapshot: dict[str, ModelUsageStats]) -> dict[str, dict[str, Any]]:
        """Tokens and requests per model since ``snapshot``, JSON-ready."""
        return {
            model: {
                "input_tokens": delta.token_usage.input_tokens,
                "output_tokens": delta.token_usage.output_tokens,
                "total_tokens": delta.token_usage.input_tokens + delta.token_usage.output_tokens,
                "successful_requests": delta.request_usage.successful_requests,
                "failed_requests": delta.request_usage.failed_requests,
            }
            for model, delta in sorted(self.get_usage_deltas(snapshot).items())
        }


class SharedRegistryDataDesigner(DataDesigner):
    """A ``DataDesigner`` whose ``create()`` calls all use one :class:`SharedModelRegistry`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._registry_lock = threading.Lock()
        self._shared_registry: SharedModelRegistry | None = None
        self._current_owner = threading.local()

    @property
    def shared_registry(self) -> SharedModelRegistry:
        """The process-wide registry (built on first use)."""
        with self._registry_lock:
            if self._shared_registry is None:
                provider = super()._create_resource_provider("shared-model-registry", DataDesignerConfigBuilder([]))
                self._shared_registry = SharedModelRegistry.adopt(provider.model_registry)
            return self._shared_registry

    def register_stage_models(self, builder: DataDesignerConfigBuilder, owner: str) -> None:
        """Register a stage's model configs before it runs (raises on a conflicting alias)."""
        self.shared_registry.register_stage_models(builder.model_configs, owner)

    def _create_resource_provider(
        self, dataset_name: str, config_builder: DataDesignerConfigBuilder, **kwargs: Any
    ) -> ResourceProvider:
        provider = super()._create_resource_provider(dataset_name, config_builder, **kwargs)
        if kwargs.get("client_concurrency_mode", ClientConcurrencyMode.ASYNC) != ClientConcurrencyMode.ASYNC:
            return provider  # get_models() wants sync clients: leave it Data Designer's own registry
        registry = self.shared_registry
        registry.register_stage_models(config_builder.model_configs, owner=f"create({dataset_name!r})")
        provider.model_registry = registry
        return provider


_DATA_DESIGNERS: dict[str, SharedRegistryDataDesigner] = {}
_DATA_DESIGNERS_LOCK = threading.Lock()


def _count_tokens_disabled(text: str) -> int:
    raise RuntimeError(
        "token statistics are off (offline default: the tokenizer is downloaded from the internet); "
        "set DataDesignerResource(token_statistics=True) to turn them on"
    )


def apply_token_statistics_setting(enabled: bool) -> None:
    """Turn Data Designer's tiktoken-based token statistics on or off for this process.

    Data Designer's profiler counts prompt and output tokens with tiktoken's ``cl100k_base``,
    which downloads its vocabulary from the internet on first use. Off, the profiler records those
    statistics as not calculated instead of reaching the network.
    """
    from data_designer.engine.analysis.utils import column_statistics_calculations as calculations
    from data_designer.engine.utils.token_counting import count_text_tokens

    calculations.count_text_tokens = count_text_tokens if enabled else _count_tokens_disabled


class DataDesignerResource(dg.ConfigurableResource):
    """The shared Data Designer of a process (resource key ``"data_designer"``).

    Attributes:
        model_providers: providers in Data Designer's ``ModelProvider`` shape (``name``, ``endpoint``,
            ``provider_type``, ``api_key``, ...). ``api_key`` is an environment variable name or a value;
            it never appears in metadata, logs or artifacts. ``None`` uses Data Designer's own defaults.
        run_config: Data Designer ``RunConfig`` fields (``buffer_size``, ``disable_early_shutdown``, ...),
            applied once per process. ``otel_metrics_port`` defaults to ``None`` (no port is bound).
        token_statistics: compute tiktoken token statistics (downloads a tokenizer; off by default).
        setup_hint: appended to "provider not configured" errors, to tell users how to configure one.
    """

    model_providers: list[dict[str, Any]] | None = None
    run_config: dict[str, Any] = Field(default_factory=dict)
    token_statistics: bool = False
    setup_hint: str | None = None

    def providers(self) -> list[ModelProvider]:
        """The configured providers as Data Designer objects (Data Designer's defaults when none)."""
        if self.model_providers is None:
            return get_default_providers()
        return [ModelProvider.model_validate(p) for p in self.model_providers]

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
                apply_token_statistics_setting(self.token_statistics)
                data_designer = SharedRegistryDataDesigner(
                    model_providers=self.providers(), auto_configure_logging=False
                )
                data_designer.set_run_config(self.data_designer_run_config())
                _DATA_DESIGNERS[key] = data_designer
            return data_designer

    def secret_values(self) -> list[str]:
        """Resolved API key values, so log lines can be redacted."""
        values = []
        for provider in self.providers():
            key = provider.api_key
            if not key:
                continue
            values.append(key)
            if os.environ.get(key):
                values.append(os.environ[key])
        return [v for v in values if len(v) >= 4]
