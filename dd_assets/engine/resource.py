"""DataDesignerResource: the Dagster resource that gives every stage of a process one shared Data Designer.

Its configuration (providers, run config, token statistics) picks a process-wide
:class:`~dd_assets.engine.shared_data_designer.SharedRegistryDataDesigner`, so every stage of a process shares one
model registry, its health checks and its request admission.
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
from typing import Any

import dagster as dg
from data_designer.config.models import ModelProvider
from data_designer.config.run_config import RunConfig
from pydantic import ConfigDict, Field, field_validator

from dd_assets.engine.provider_settings import CREDENTIAL_FIELDS, check_provider
from dd_assets.engine.shared_data_designer import SharedRegistryDataDesigner
from dd_assets.engine.stage_guard import DEFAULT_STALL_TIMEOUT_S
from dd_assets.spec.default_models import default_model_providers
from dd_assets.spec.known_fields import refuse_unknown_fields
from dd_assets.spec.secrets import (
    env_values,
    env_var_names_to_str,
    named_credentials,
    resolve_env_var,
    resolve_named_credentials,
)

# One DataDesigner per resource configuration and process, so every stage of a process shares its registry, health
# checks and admission; the least recently used configurations are dropped beyond a few (a notebook or test process
# building many resources must not keep every one of them alive).
_DATA_DESIGNERS: collections.OrderedDict[str, SharedRegistryDataDesigner] = collections.OrderedDict()
_DATA_DESIGNERS_LOCK = threading.Lock()
MAX_DATA_DESIGNERS = 16


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
        progress_every_s: while a stage generates, report its progress to the run's event log as each batch
            finishes and this often between batches (batches, records, requests, rate, time left); ``0`` turns it off.
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
