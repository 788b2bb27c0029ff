"""Which Data Designer dd_assets runs on, and every private part of it dd_assets relies on, in one list.

dd_assets supports two lines of Data Designer: 0.9.7 and later 0.9 releases (0.9.7 carries a fork-safety fix for
its engine loop), and 1.0 (its release candidates included). Public API (``data_designer.config``, the
``DataDesigner`` interface, its results and errors) is used as documented. :data:`PRIVATE_SURFACES` lists what is
not public: the engine classes dd_assets overrides or wraps, instance attributes it reaches into, the module
attributes it replaces, the artifact files it reads and the one message it matches. The ones that can be looked up
without running anything are checked when dd_assets is imported (:func:`check_data_designer_compatibility`); the
others are checked where they are used and fail with :class:`DataDesignerCompatibilityError` naming what is missing.

Process-wide, dd_assets replaces three module attributes of Data Designer (each marked ``replaced``), once and for
good: the home seeding ``DataDesigner.__init__`` calls (:mod:`dd_assets.engine.dd_home`) and the profiler's two token
counting functions (:mod:`dd_assets.engine.token_statistics`). Each replacement is a switch read from a context
variable, so outside dd_assets' own calls Data Designer behaves as before, and stages running at once each keep
their own setting.

Where Data Designer 1.0 reports an outcome publicly (:func:`creation_outcome`), dd_assets reads it; on 0.9 it
derives the same from the files, as before.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

SUPPORTED_DATA_DESIGNER = SpecifierSet(">=0.9.7,<1.1")
"""The Data Designer versions dd_assets is tested on (pre-releases inside the range, such as 1.0.0rc1, included)."""


class DataDesignerCompatibilityError(ImportError):
    """The installed Data Designer is not one whose private surface dd_assets overrides safely."""


@dataclass(frozen=True)
class PrivateSurface:
    """One private part of Data Designer dd_assets relies on.

    ``name`` is ``module:qualified.name`` for code, or a description for a file or a message. ``parameters``,
    when set, is the exact signature dd_assets overrides. ``at_import`` says whether it is checked when dd_assets
    is imported (code that can be looked up) or where it is used (instance attributes, files, messages).
    ``replaced`` marks a module attribute dd_assets sets to its own function for the whole process.
    """

    name: str
    used_by: str
    parameters: tuple[str, ...] | None = None
    at_import: bool = True
    replaced: bool = False


_DD = "data_designer.interface.data_designer"
_REGISTRY = "data_designer.engine.models.registry:ModelRegistry"
_ERRORS = "data_designer.engine.models.clients.errors"
_SETTINGS = "data_designer.config.default_model_settings"

PRIVATE_SURFACES: tuple[PrivateSurface, ...] = (
    # one DataDesigner and one model registry per process (dd_assets.engine.shared_data_designer, shared_registry)
    PrivateSurface(
        f"{_DD}:DataDesigner._create_resource_provider",
        "shared_data_designer.SharedRegistryDataDesigner: swaps in the process-wide registry",
        parameters=("self", "dataset_name", "config_builder", "resume", "artifact_path", "client_concurrency_mode"),
    ),
    *(
        PrivateSurface(f"{_REGISTRY}.{method}", "shared_registry.SharedModelRegistry: subclassed and shared")
        for method in ("register_model_configs", "run_health_check", "arun_health_check", "get_model")
    ),
    PrivateSurface(f"{_REGISTRY}._set_model_configs", "shared_registry.SharedModelRegistry: registers models"),
    PrivateSurface(
        "ModelRegistry()._model_configs, ._models (dicts)", "shared_registry.SharedModelRegistry.adopt", at_import=False
    ),
    PrivateSurface(
        "data_designer.engine.resources.resource_provider:ResourceProvider",
        "shared_data_designer: model_registry and scheduler_event_sink are replaced on each create()",
    ),
    PrivateSurface(
        "data_designer.engine.observability:fanout_scheduler_event_sinks",
        "shared_data_designer: adds the stage guard's scheduler sink",
    ),
    PrivateSurface(
        "data_designer.engine.models.clients.adapters.http_model_client:ClientConcurrencyMode.ASYNC",
        "shared_data_designer: the shared registry serves async clients only",
    ),
    PrivateSurface(
        "data_designer.engine.models.usage:ModelUsageStats.extend",
        "shared_registry.StageRoutedUsageStats: usage per stage; stage_context: the stage's meter",
    ),
    *(
        PrivateSurface(f"data_designer.engine.models.usage:{name}", "stage_context: a stage's token meter")
        for name in ("RequestUsageStats", "TokenUsageStats")
    ),
    PrivateSurface("ModelFacade()._usage_stats", "shared_registry.SharedModelRegistry.get_model", at_import=False),
    PrivateSurface(
        "ModelFacade()._client (a ModelRequestExecutor) and its ._inner",
        "shared_registry.guard_requests: the stage guard wraps the HTTP adapter",
        at_import=False,
    ),
    PrivateSurface(
        "data_designer.engine.models.clients.model_request_executor:ModelRequestExecutor",
        "shared_registry.guard_requests",
    ),
    # token statistics only when asked (dd_assets.engine.token_statistics)
    PrivateSurface(
        "data_designer.engine.analysis.utils.column_statistics_calculations:count_text_tokens",
        "token_statistics.install_token_statistics_switch: replaced to keep the profiler offline",
        replaced=True,
    ),
    PrivateSurface(
        "data_designer.engine.analysis.column_statistics:calculate_token_stats",
        "token_statistics.install_token_statistics_switch: replaced, skipped when off (one INFO line, no warnings)",
        replaced=True,
    ),
    PrivateSurface(
        "data_designer.engine.analysis.utils.column_statistics_calculations:calculate_token_stats",
        "token_statistics: the statistics when on",
    ),
    PrivateSurface("data_designer.engine.utils.token_counting:count_text_tokens", "token_statistics: counts when on"),
    # stall deadline and token budget (dd_assets.engine.stage_guard, guard_hooks, request_failures)
    PrivateSurface("data_designer.engine.models.clients.base:ModelClient", "guard_hooks.GuardedModelClient"),
    PrivateSurface("data_designer.engine.context:current_run_cancel_event", "stage_guard: stops a scheduler run"),
    *(
        PrivateSurface(f"{_ERRORS}:ProviderErrorKind.{kind}", "request_failures: which failures are waiting")
        for kind in ("RATE_LIMIT", "REQUEST_ADMISSION_TIMEOUT", "API_CONNECTION", "TIMEOUT")
    ),
    PrivateSurface(f"{_ERRORS}:ProviderError", "guard_hooks.RefusedByGuard, request_failures"),
    PrivateSurface(f"{_ERRORS}:SyncClientUnavailableError", "guard_hooks: a sync attempt that is not a request"),
    PrivateSurface("scheduler event 'scheduler_job_started'", "guard_hooks.SchedulerStartSink", at_import=False),
    # the estimate (dd_assets.engine.prompt_rendering, for dd_assets.tools.estimate)
    PrivateSurface(
        "data_designer.engine.column_generators.utils.prompt_renderer:create_response_recipe",
        "prompt_rendering.response_recipe: the schema and instructions Data Designer adds to a prompt",
    ),
    PrivateSurface(
        "data_designer.config.utils.misc:extract_keywords_from_jinja2_template",
        "prompt_rendering.template_variables: the values a prompt inserts",
    ),
    PrivateSurface(
        "data_designer.config.utils.constants:DEFAULT_NUM_RECORDS", "spec.seed_files: num_records when none is set"
    ),
    # nothing written to Data Designer's home (dd_assets.engine.dd_home, spec.default_models, shared_data_designer)
    PrivateSurface(
        "data_designer.config.utils.constants:MODEL_CONFIGS_FILE_PATH", "spec.default_models: reads the user's models"
    ),
    PrivateSurface(
        "data_designer.config.utils.constants:MODEL_PROVIDERS_FILE_PATH",
        "spec.default_models: reads the user's providers",
    ),
    *(
        PrivateSurface(f"{_SETTINGS}:{name}", "spec.default_models: Data Designer's default models and providers")
        for name in (
            "get_default_model_configs",
            "get_builtin_model_configs",
            "get_default_providers",
            "get_builtin_model_providers",
        )
    ),
    PrivateSurface(f"{_SETTINGS}:resolve_seed_default_model_settings", "dd_home: seeds the home outside dd_assets"),
    PrivateSurface(
        f"{_DD}:resolve_seed_default_model_settings",
        "dd_home.install_home_seeding_switch: replaced, never writes the home within not_seeding_home",
        replaced=True,
    ),
    PrivateSurface(
        "data_designer.config.utils.constants:MANAGED_ASSETS_PATH", "shared_data_designer: the person reader's assets"
    ),
    PrivateSurface(
        "data_designer.engine.resources.person_reader:LocalPersonReader",
        "shared_data_designer: reads person data only when used",
    ),
    # the artifact layout (dd_assets.engine.artifact_layout, for run.resumable_work, remote_checkpoint, progress)
    PrivateSurface(
        "artifacts: metadata.json (buffer_size, target_num_records, post_generation_processed, "
        "post_generation_state; without config_hash, resume skips its path-bound config check), "
        "parquet-files/batch_NNNNN.parquet, tmp-partial-parquet-files/",
        "resumable_work, remote_checkpoint, progress: resume, short batches, checkpoints, progress",
        at_import=False,
    ),
    PrivateSurface(
        "the message 'Cannot resume' of a refused ResumeMode.ALWAYS",
        "run.generation: starts refused work afresh (no Data Designer version raises a distinct error for it)",
        at_import=False,
    ),
)

EXPECTED_CREATE_RESOURCE_PROVIDER_PARAMETERS = PRIVATE_SURFACES[0].parameters
REGISTRY_METHODS_USED = tuple(
    s.name.rsplit(".", 1)[1] for s in PRIVATE_SURFACES if s.name.startswith(f"{_REGISTRY}.") and s.at_import
)


def installed_version() -> str:
    """The installed data-designer version."""
    try:
        return importlib.metadata.version("data-designer")
    except importlib.metadata.PackageNotFoundError:
        from data_designer.config.version import get_library_version

        return get_library_version()


def version_problem(version: str) -> str | None:
    """Why ``version`` is not supported (``None`` when it is)."""
    try:
        if SUPPORTED_DATA_DESIGNER.contains(Version(version), prereleases=True):
            return None
    except InvalidVersion:
        return f"data-designer reports an unreadable version {version!r}"
    return f"data-designer {version} is installed; dd_assets supports {SUPPORTED_DATA_DESIGNER}"


def compatibility_problems(
    version: str, resource_provider_parameters: list[str], registry_methods: set[str]
) -> list[str]:
    """What makes a Data Designer install unsafe for the shared registry override (empty when none)."""
    problems = [p for p in [version_problem(version)] if p]
    if tuple(resource_provider_parameters) != EXPECTED_CREATE_RESOURCE_PROVIDER_PARAMETERS:
        problems.append(
            "DataDesigner._create_resource_provider takes ("
            + ", ".join(resource_provider_parameters)
            + "), expected ("
            + ", ".join(EXPECTED_CREATE_RESOURCE_PROVIDER_PARAMETERS)
            + ")"
        )
    missing = [name for name in REGISTRY_METHODS_USED if name not in registry_methods]
    if missing:
        problems.append(f"ModelRegistry lacks {', '.join(missing)}")
    return problems


def lookup(name: str) -> Any:
    """The object ``module:qualified.name`` names (raises ``ImportError`` or ``AttributeError``)."""
    module_name, _, path = name.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in path.split(".") if path else []:
        target = getattr(target, part)
    return target


def surface_problems(surfaces: tuple[PrivateSurface, ...] = PRIVATE_SURFACES) -> list[str]:
    """The import-checked surfaces this install lacks or has changed (empty when none)."""
    problems = []
    for surface in surfaces:
        if not surface.at_import:
            continue
        try:
            target = lookup(surface.name)
        except (ImportError, AttributeError):
            problems.append(f"{surface.name} is missing (used by {surface.used_by})")
            continue
        if surface.parameters is not None:
            found = tuple(inspect.signature(target).parameters)
            if found != surface.parameters:
                problems.append(
                    f"{surface.name} takes ({', '.join(found)}), expected ({', '.join(surface.parameters)})"
                )
    return problems


def check_data_designer_compatibility() -> None:
    """Raise :class:`DataDesignerCompatibilityError` unless the installed Data Designer is supported and has every
    import-checked private surface dd_assets relies on."""
    problems = [p for p in [version_problem(installed_version())] if p] + surface_problems()
    if problems:
        raise DataDesignerCompatibilityError(
            "dd_assets relies on private parts of Data Designer (listed in dd_assets.engine.data_designer_surface), "
            "which this install does not match: "
            + "; ".join(problems)
            + f". Install a supported version: pip install 'data-designer{SUPPORTED_DATA_DESIGNER}'"
        )


@dataclass(frozen=True)
class CreationOutcome:
    """What one ``DataDesigner.create()`` produced, from Data Designer 1.0's public results where it has them.

    ``early_shutdown`` and ``resumed`` are ``None`` where the installed Data Designer does not report them (0.9).
    """

    requested: int
    actual: int
    is_partial: bool
    early_shutdown: bool | None
    resumed: bool | None


def creation_outcome(result: Any, requested: int) -> CreationOutcome:
    """The outcome of a ``create()``: 1.0's ``actual_num_records``, ``is_partial``, ``early_shutdown`` and
    ``effective_resume_mode``, or on 0.9 the record count of its batch files (the rest unknown)."""
    from data_designer.config.run_config import ResumeMode

    if hasattr(result, "actual_num_records") and hasattr(result, "requested_num_records"):
        effective = getattr(result, "effective_resume_mode", None)
        return CreationOutcome(
            requested=result.requested_num_records,
            actual=result.actual_num_records,
            is_partial=result.is_partial,
            early_shutdown=getattr(result, "early_shutdown", None),
            resumed=None if effective is None else effective == ResumeMode.ALWAYS,
        )
    actual = result.count_records()
    return CreationOutcome(requested, actual, is_partial=actual < requested, early_shutdown=None, resumed=None)
