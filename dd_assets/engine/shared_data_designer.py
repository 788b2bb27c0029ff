"""SharedRegistryDataDesigner: a ``DataDesigner`` whose every ``create()`` uses the process's one model registry.

Why an override: Data Designer (0.9 and 1.0) builds a new ``ModelRegistry`` inside every ``create()``
(``DataDesigner._create_resource_provider``), so each stage would repeat its model health checks and open new HTTP
clients. :class:`SharedRegistryDataDesigner` overrides only that method: it lets Data Designer build the resource
provider as usual, then swaps in one :class:`~dd_assets.engine.shared_registry.SharedModelRegistry` into which the
model configs each stage's columns use are registered, and adds the stage guard's scheduler event sink. The override
reaches into Data Designer's private surface: the supported versions and every private part dd_assets relies on are
listed in :mod:`dd_assets.engine.data_designer_surface`, and checked when dd_assets is imported.
"""

from __future__ import annotations

import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

from data_designer.config.config_builder import DataDesignerConfigBuilder
from data_designer.config.utils.constants import MANAGED_ASSETS_PATH
from data_designer.engine.models.clients.adapters.http_model_client import ClientConcurrencyMode
from data_designer.engine.observability import fanout_scheduler_event_sinks
from data_designer.engine.resources.person_reader import LocalPersonReader
from data_designer.engine.resources.resource_provider import ResourceProvider
from data_designer.interface.data_designer import DataDesigner

from dd_assets.engine.dd_home import not_seeding_home
from dd_assets.engine.guard_hooks import SchedulerStartSink
from dd_assets.engine.shared_registry import SharedModelRegistry
from dd_assets.engine.token_statistics import TOKEN_STATISTICS, install_token_statistics_switch
from dd_assets.spec.stage_models import used_model_configs

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
        token = TOKEN_STATISTICS.set(self.token_statistics)
        try:
            return super().create(*args, **kwargs)
        finally:
            TOKEN_STATISTICS.reset(token)

    def preview(self, *args: Any, **kwargs: Any) -> Any:
        """Data Designer's ``preview()``, with this DataDesigner's token-statistics setting."""
        ignore_data_designers_own_deprecations()
        token = TOKEN_STATISTICS.set(self.token_statistics)
        try:
            return super().preview(*args, **kwargs)
        finally:
            TOKEN_STATISTICS.reset(token)

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
