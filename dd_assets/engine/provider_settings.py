"""The model providers of a DataDesignerResource: Data Designer's ``ModelProvider`` shape, credentials only by name.

A provider's key and the credentials in its headers or request body are given as names of environment variables,
read in the process that sends requests: a literal value would end up in Dagster's run snapshots and UI.
"""

from __future__ import annotations

from typing import Any

from data_designer.config.models import ModelProvider
from pydantic import ValidationError

from dd_assets.spec.secrets import LiteralSecretError, literal_credentials, require_env_var_name

CREDENTIAL_FIELDS = ("extra_headers", "extra_body")
"""The ``ModelProvider`` fields whose credential-named entries dd_assets reads from environment variables."""


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
