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
from urllib.parse import parse_qsl, urlsplit

import dagster as dg

ENV_VAR_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
"""An environment variable name as dd_assets accepts it: upper case letters, digits and ``_``."""

_CREDENTIAL_NAME = re.compile(
    r"secret|passw|pwd|token|credential|private|auth|cookie|session|signature$|"
    r"(^|[_-])(api|access|account|session|secret|subscription|client)?[_-]?key$|apikey|^sig$",
    re.IGNORECASE,
)
# An HTTP auth scheme at the start of a value: a credential whatever the header's name.
_AUTH_SCHEME_VALUE = re.compile(r"\s*(bearer|basic|digest|negotiate|aws4-hmac-sha256)\s+\S", re.IGNORECASE)
# Query parameters that carry credentials (besides credential-named ones): signed URLs and OAuth codes.
_CREDENTIAL_QUERY = re.compile(r"^(key|sig|code|x-amz-.*|x-goog-.*|awsaccesskeyid)$", re.IGNORECASE)


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
    if is_env_var_name(value):
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


def url_credentials(value: str) -> str | None:
    """What makes ``value`` a URL carrying a credential (``user:password@``, ``?key=``), or ``None``.

    The answer names the part (``userinfo``, ``query parameter 'key'``), never its value.
    """
    if "://" not in value:
        return None
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    if parts.username is not None or parts.password is not None:
        return "user or password in the URL (user:password@host)"
    for name, _ in parse_qsl(parts.query, keep_blank_values=False):
        if is_credential_name(name) or _CREDENTIAL_QUERY.match(name):
            return f"query parameter {name!r}"
    return None


def literal_credentials(value: Any, path: str = "") -> list[str]:
    """Where a config value holds a literal credential: ``path: why`` for each, never the value itself.

    Walks mappings and lists. A credential is a string under a credential-named key (``api_key``, ``Cookie``,
    ``X-Auth-Token``, ``password``, ...) that is not an environment variable name, a string that starts with an
    HTTP auth scheme (``Bearer ...``) under any key, or a URL with a user, password or credential query parameter.
    """
    found = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}[{str(key)!r}]" if path else str(key)
            if isinstance(item, str) and not isinstance(item, dg.EnvVar) and is_credential_name(str(key)):
                if item and item not in NOT_SECRET_VALUES and not is_env_var_name(item):
                    found.append(f"{where}: a literal value under a credential's name")
                    continue
            found += literal_credentials(item, where)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found += literal_credentials(item, f"{path}[{index}]")
    elif isinstance(value, str) and not isinstance(value, dg.EnvVar):
        if _AUTH_SCHEME_VALUE.match(value):
            found.append(f"{path or 'value'}: an HTTP credential (auth scheme and token)")
        else:
            reason = url_credentials(value)
            if reason:
                found.append(f"{path or 'value'}: {reason}")
    return found


def named_credentials(value: Any) -> list[str]:
    """The environment variable names given under credential-named keys of a mapping (nested), in order."""
    if isinstance(value, Mapping):
        names = []
        for key, item in value.items():
            if is_credential_name(str(key)) and is_env_var_name(item):
                names.append(item)
            else:
                names += named_credentials(item)
        return names
    if isinstance(value, (list, tuple)):
        return [name for item in value for name in named_credentials(item)]
    return []


def resolve_named_credentials(value: Any, where: str) -> Any:
    """``value`` with each environment variable name under a credential-named key replaced by the variable's value
    (see :func:`named_credentials`); an unset variable is a :class:`LiteralSecretError` naming it."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if is_credential_name(str(key)) and is_env_var_name(item):
                out[key] = resolve_env_var(item, f"{where}[{str(key)!r}]")
            else:
                out[key] = resolve_named_credentials(item, f"{where}[{str(key)!r}]")
        return out
    if isinstance(value, list):
        return [resolve_named_credentials(item, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def env_var_names_to_str(value: Any) -> Any:
    """``value`` with every ``dg.EnvVar`` in nested mappings and lists turned into its plain name."""
    if isinstance(value, dg.EnvVar):
        return env_var_name(value)
    if isinstance(value, Mapping):
        return {key: env_var_names_to_str(item) for key, item in value.items()}
    if isinstance(value, list):
        return [env_var_names_to_str(item) for item in value]
    return value


def is_env_var_name(value: Any) -> bool:
    """True for a string dd_assets takes as an environment variable name (and not an AWS access key id)."""
    return isinstance(value, str) and bool(ENV_VAR_NAME.fullmatch(value)) and not _LOOKS_LIKE_A_KEY.fullmatch(value)


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
