"""A workflow file that does not load: the rest of its folder still loads, and the error shows in the asset catalog.

One broken file in a folder of workflows used to take every workflow of the code location out of the UI, its error
only under Deployment, inside a long trace. Now ``load_workflow_dir(folder, failures=[])`` (what the example project
and the Component use) keeps each file's :class:`~dd_assets.spec.WorkflowDefinitionError` instead of raising it, the
other files load, and ``build_workflow_definitions(..., load_failures=failures)`` defines one asset per broken file,
``load_errors/<file name>`` in the group ``load_errors``, whose description is the error (file, workflow, stage and
field); materializing it fails with that error. Each error is also logged when definitions load.

Under ``dagster definitions validate`` and ``dg check defs`` (they set ``DAGSTER_IS_DEFS_VALIDATION_CLI=1``), or
with ``DD_ASSETS_STRICT_LOAD=1``, the first error is raised as before, so CI fails hard on a broken file.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from dd_assets.spec import WorkflowDefinitionError

logger = logging.getLogger(__name__)

LOAD_ERRORS_GROUP = "load_errors"
LOAD_ERROR_METADATA = "dd_assets/load_error"
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


def load_error_asset(failure: WorkflowLoadFailure) -> dg.AssetsDefinition:
    """An asset standing for a file that does not load: its description is the error; materializing it fails."""
    message = str(failure.error)

    @dg.asset(
        key=failure.asset_key,
        group_name=LOAD_ERRORS_GROUP,
        description=f"Does not load, so none of its stages are defined. {message}",
        metadata={
            LOAD_ERROR_METADATA: dg.MetadataValue.text(message),
            "dd_assets/file": dg.MetadataValue.path(failure.file),
        },
        kinds={"dd_assets"},
    )
    def _load_error() -> None:
        raise dg.Failure(description=f"{message} (fix the file and reload the definitions)")

    return _load_error
