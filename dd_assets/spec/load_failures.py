"""Workflow files that do not load, collected instead of raised (see :mod:`dd_assets.assets.load_errors`)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from dd_assets.spec.definition_error import WorkflowDefinitionError

logger = logging.getLogger(__name__)

LOAD_ERRORS_GROUP = "load_errors"
STRICT_ENV = ("DAGSTER_IS_DEFS_VALIDATION_CLI", "DD_ASSETS_STRICT_LOAD")


@dataclass(frozen=True)
class WorkflowLoadFailure:
    """A workflow file (or Component) that did not load, and why."""

    file: str
    error: WorkflowDefinitionError
    name: str | None = None  # the asset's name (default: from the file's name)

    @property
    def asset_key(self) -> dg.AssetKey:
        name = self.name or Path(self.file).name
        return dg.AssetKey([LOAD_ERRORS_GROUP, re.sub(r"[^A-Za-z0-9_]", "_", name)])


def strict_loading() -> bool:
    """Whether a broken workflow file must fail the whole code location (definitions validation, or asked for)."""
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in STRICT_ENV)


def keep_or_raise(failures: list[WorkflowLoadFailure] | None, failure: WorkflowLoadFailure) -> None:
    """Keep ``failure`` in ``failures`` (and log it); raise its error when not collecting or loading strictly."""
    if failures is None or strict_loading():
        raise failure.error
    key = failure.asset_key.to_user_string()
    logger.warning("%s (the other workflows load; this file's error is the asset %s)", failure.error, key)
    failures.append(failure)
