"""Names of workflows and stages: the characters and length they allow, and the Dagster names made of them."""

from __future__ import annotations

import re

import dagster as dg

from dd_assets.spec.definition_error import WorkflowDefinitionError

STAGE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
WORKFLOW_NAME_PATTERN = re.compile(r"[A-Za-z0-9_]+")  # a Dagster group name: no '-'
MAX_NAME_LENGTH = 64


def check_name(value: object, label: str, *, workflow: str | None, stage: str | None) -> None:
    """Raise when ``value`` is not a valid ``"workflow name"`` or ``"stage name"`` (``label``)."""
    pattern, allowed = (
        (WORKFLOW_NAME_PATTERN, "letters, digits and '_'")
        if label == "workflow name"
        else (STAGE_NAME_PATTERN, "letters, digits, '_' and '-'")
    )
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise WorkflowDefinitionError(
            f"{label} {value!r} is invalid: use {allowed} only", workflow=workflow, stage=stage, field="name"
        )
    if len(value) > MAX_NAME_LENGTH:
        raise WorkflowDefinitionError(
            f"{label} {value!r} is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}",
            workflow=workflow,
            stage=stage,
            field="name",
        )


def stage_op_name(workflow: str, stage: str) -> str:
    """The Dagster op name of a stage: ``<workflow>__<stage>`` with ``-`` as ``_`` (ops allow no ``-``)."""
    return f"{workflow}__{stage}".replace("-", "_")


def upstream_name(dep: str | dg.AssetKey) -> str:
    """A stage name, or an asset key as ``a/b``."""
    return dep if isinstance(dep, str) else dep.to_user_string()
