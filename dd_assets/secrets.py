"""Keeping credentials out of Dagster: they are named by environment variable, never written as values.

Dagster stores resource configuration in run snapshots and shows it in the UI (GraphQL
``configuredValues``). So a provider's ``api_key`` and a storage credential are the *name* of an
environment variable (or ``dg.EnvVar("NAME")``, which is turned into the name), resolved only in the
process that uses it. A literal value is refused with a message that does not repeat it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

ENV_VAR_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
"""An environment variable name as dd_assets accepts it: upper case letters, digits and ``_``."""

_CREDENTIAL_NAME = re.compile(
    r"secret|passw|token|credential|private|authori[sz]ation|(^|[_-])(api|access|account|session|secret)?[_-]?key$",
    re.IGNORECASE,
)


class LiteralSecretError(ValueError):
    """A credential was given as a value instead of an environment variable name. The value is not shown."""


def is_credential_name(name: str) -> bool:
    """True for option or header names that hold credentials (``key``, ``secret``, ``api_key``, ``token``, ...)."""
    return bool(_CREDENTIAL_NAME.search(name))


def env_var_name(value: Any) -> Any:
    """``dg.EnvVar("NAME")`` as the plain name ``"NAME"``; any other value unchanged.

    Dagster resolves an ``EnvVar`` into its value when it builds a resource for a run; dd_assets keeps the
    name instead and resolves it itself, so the value never passes through Dagster's config.
    """
    if isinstance(value, dg.EnvVar):
        return str.__str__(value)
    return value


_LOOKS_LIKE_A_KEY = re.compile(r"(AKIA|ASIA)[A-Z0-9]{16}")  # an AWS access key id fits the name pattern


def require_env_var_name(value: Any, where: str) -> str:
    """``value`` when it is an environment variable name; otherwise a :class:`LiteralSecretError`."""
    value = env_var_name(value)
    if isinstance(value, str) and ENV_VAR_NAME.fullmatch(value) and not _LOOKS_LIKE_A_KEY.fullmatch(value):
        return value
    raise LiteralSecretError(
        f"{where} must name an environment variable (upper case letters, digits and '_', e.g. 'OPENAI_API_KEY') "
        "or be dg.EnvVar('NAME'); a literal credential would be stored in Dagster's run snapshots and shown in "
        "its UI, so it is refused (the value is not repeated here)"
    )


def resolve_env_var(name: str, where: str) -> str:
    """The value of environment variable ``name``; a clear error (naming the variable only) when it is unset."""
    value = os.environ.get(name)
    if not value:
        raise LiteralSecretError(
            f"{where} names environment variable {name!r}, which is not set in this process; set it where the "
            "run executes"
        )
    return value


def env_values(names: Iterable[str | None]) -> list[str]:
    """The values of the set environment variables among ``names`` (for redaction)."""
    return [os.environ[n] for n in names if n and os.environ.get(n)]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``***`` (longest first, so no part of one is left)."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


# Values of credential-named options that choose an auth method rather than hold a secret (gcsfs ``token``).
NOT_SECRET_VALUES = {"anon", "google_default", "cloud", "cache", "browser"}


def credential_paths(options: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of credential-named entries holding a literal string, searched through nested mappings."""
    found = []
    for key, value in options.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found += credential_paths(value, f"{path}.")
        elif (
            isinstance(value, str)
            and not isinstance(value, dg.EnvVar)
            and value not in NOT_SECRET_VALUES
            and is_credential_name(str(key))
        ):
            found.append(path)
    return found


def nested_env_vars(options: Mapping[str, Any], prefix: str = "", depth: int = 0) -> list[str]:
    """Dotted paths of ``dg.EnvVar`` values below the top level (which Dagster would leave unresolved)."""
    found = []
    for key, value in options.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found += nested_env_vars(value, f"{path}.", depth + 1)
        elif isinstance(value, dg.EnvVar) and depth > 0:
            found.append(path)
    return found
