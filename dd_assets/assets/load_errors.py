"""A workflow file that does not load: the rest of its folder still loads, and the error shows in the asset catalog.

One broken file in a folder of workflows used to take every workflow of the code location out of the UI, its error
only under Deployment, inside a long trace. Now ``load_workflow_dir(folder, failures=[])`` (what the example project
and the Component use) keeps each file's :class:`~dd_assets.spec.definition_error.WorkflowDefinitionError`
instead of raising it (:mod:`dd_assets.spec.load_failures`), the other files load, and
``build_workflow_definitions(..., load_failures=failures)`` defines one asset per broken file,
``load_errors/<file name>`` in the group ``load_errors``, whose description is the error (file, workflow, stage and
field); materializing it fails with that error. Each error is also logged when definitions load.

Under ``dagster definitions validate`` and ``dg check defs`` (they set ``DAGSTER_IS_DEFS_VALIDATION_CLI=1``), or
with ``DD_ASSETS_STRICT_LOAD=1``, the first error is raised as before, so CI fails hard on a broken file.
"""

from __future__ import annotations

import dagster as dg

from dd_assets.spec.load_failures import LOAD_ERRORS_GROUP, WorkflowLoadFailure

LOAD_ERROR_METADATA = "dd_assets/load_error"


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
