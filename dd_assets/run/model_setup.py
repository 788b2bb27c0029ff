"""Whether a stage's models can be called, and which they are: checked before generating, named when it fails."""

from __future__ import annotations

import contextlib

from data_designer.config.config_builder import DataDesignerConfigBuilder

from dd_assets.engine.resource import DataDesignerResource
from dd_assets.spec.secrets import LiteralSecretError
from dd_assets.spec.stage_models import used_model_aliases


def model_setup_problem(
    builder: DataDesignerConfigBuilder, resource: DataDesignerResource, description: str | None = None
) -> str | None:
    """Why the stage's models cannot be called (a model alias, its provider or the provider's key is missing), else
    ``None``: checked before any generation, by a run and by ``dd-assets preview``. A missing provider's message
    ends with the resource's ``setup_hint``, else the stage's ``description`` (where projects say how to set one up).
    """
    aliases = used_model_aliases(builder)
    if not aliases:
        return None
    configs = {m.alias: m for m in builder.model_configs}
    providers = {p.name for p in resource.providers()}
    for alias in aliases:
        model = configs.get(alias)
        if model is None:
            return f"model alias {alias!r} has no model config in the stage config (field 'config')"
        if model.provider not in providers:
            configured = ", ".join(sorted(providers)) or "none"
            return (
                f"model alias {alias!r} uses provider {model.provider!r}, which is not configured on the "
                f"DataDesignerResource (configured: {configured}); add it to model_providers"
                + (f". {resource.setup_hint}" if resource.setup_hint else "")
                + (f". The stage's description says: {description}" if description and not resource.setup_hint else "")
            )
    try:
        resource.check_provider_keys({configs[alias].provider for alias in aliases})
    except LiteralSecretError as exc:
        return str(exc)
    return None


def models_used(builder: DataDesignerConfigBuilder, resource: DataDesignerResource | None = None) -> str:
    """'model alias 'a' (model 'm') on provider 'p' at <endpoint>, ...' for the LLM columns of a config."""
    configs = {m.alias: m for m in builder.model_configs}
    endpoints = {}
    if resource is not None:
        with contextlib.suppress(Exception):  # naming the endpoint must never hide the failure itself
            endpoints = {p.name: p.endpoint for p in resource.providers()}

    def describe(alias: str) -> str:
        if alias not in configs:
            return f"model alias {alias!r}"
        provider = configs[alias].provider
        at = f" at {endpoints[provider]}" if endpoints.get(provider) else ""
        return f"model alias {alias!r} (model {configs[alias].model!r}) on provider {provider!r}{at}"

    return ", ".join(describe(alias) for alias in used_model_aliases(builder))
