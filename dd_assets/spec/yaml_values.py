"""YAML values of Stage and Workflow fields: their types, nested models and conversions to the Python argument.

The field definitions in :mod:`dd_assets.spec.workflow` name these (a conversion gets the YAML value and the folder
of the file; a ``ValueError`` refuses the value). A Component's inline ``workflow`` attribute takes the same values.
"""

from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from data_designer.config.processor_types import ProcessorConfigT
from data_designer.config.seed import IndexRange, PartitionBlock, SamplingStrategy
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from dd_assets.spec.field_rules import EXECUTION_MODES
from dd_assets.spec.stage_config import resolve_seed_path

Number = Annotated[StrictInt | StrictFloat, WithJsonSchema({"type": "number"})]
"""A YAML number, kept as written (``45`` stays an int, as in Python); not a bool, not a string."""

SamplingStrategyName = Literal[tuple(s.value for s in SamplingStrategy)]  # type: ignore[misc]
ExecutionMode = Literal[EXECUTION_MODES]  # type: ignore[valid-type]


class IndexRangeModel(BaseModel):
    """Rows ``start``..``end`` (inclusive) of the upstream output."""

    model_config = ConfigDict(extra="forbid")
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class PartitionBlockModel(BaseModel):
    """Partition ``index`` of ``num_partitions`` equal blocks of the upstream output."""

    model_config = ConfigDict(extra="forbid")
    index: int = Field(default=0, ge=0)
    num_partitions: int = Field(default=1, ge=1)


def config_value(value: str | dict[str, Any], base_dir: Path) -> Path | dict[str, Any]:
    if isinstance(value, dict):
        return resolve_seed_path(copy.deepcopy(value), base_dir)
    path = (base_dir / value).resolve()
    if not path.is_file():
        raise ValueError(f"config file {value!r} not found (looked at {path})")
    return path


def upstreams(value: list[str], base_dir: Path) -> list[str | dg.AssetKey]:
    return [dg.AssetKey(dep.split("/")) if "/" in dep else dep for dep in value]


def processor_configs(value: list[dict[str, Any]], base_dir: Path) -> list[Any]:
    try:
        return [TypeAdapter(ProcessorConfigT).validate_python(p) for p in value]
    except ValidationError as exc:
        raise ValueError(f"invalid processor config: {exc.errors(include_url=False)[0]['msg']}") from exc


def on_success_callable(value: str, base_dir: Path) -> Any:
    return _import_path(value, label="on_success")


def combine_value(value: str, base_dir: Path) -> Any:
    return value if value in ("concat", "zip") else _import_path(value, label="combine")


class OnCronModel(BaseModel):
    """``{on_cron: "<cron>"}``: ``dg.AutomationCondition.on_cron``, run once per cron tick after every upstream
    updated since."""

    model_config = ConfigDict(extra="forbid")
    on_cron: str = Field(description="A cron schedule such as '0 6 * * *' (UTC).")


AutomationModel = Literal["eager", "on_missing"] | OnCronModel
AUTOMATION_DESCRIPTION = (
    "When Dagster's automation runs the stage: 'eager' (whenever an upstream changes, and when missing), "
    "'on_missing' (once, when missing), or {on_cron: '<cron>'}."
)
OWNERS_DESCRIPTION = "Asset owners: 'team:<name>' or an email address."
TAGS_DESCRIPTION = "Asset tags (string keys and values)."


def automation_condition(value: AutomationModel | None) -> dg.AutomationCondition | None:
    """The Dagster condition of a YAML ``automation`` value (its cron schedule checked)."""
    if value is None:
        return None
    if value == "eager":
        return dg.AutomationCondition.eager()
    if value == "on_missing":
        return dg.AutomationCondition.on_missing()
    from dagster._utils.schedules import is_valid_cron_schedule  # Dagster's own check, as its schedules use

    if not is_valid_cron_schedule(value.on_cron):
        raise ValueError(f"on_cron {value.on_cron!r} is not a valid cron schedule (five fields, e.g. '0 6 * * *')")
    return dg.AutomationCondition.on_cron(value.on_cron)


def automation_value(value: AutomationModel, base_dir: Path) -> dg.AutomationCondition | None:
    return automation_condition(value)


def selection_value(value: IndexRangeModel | PartitionBlockModel, base_dir: Path) -> IndexRange | PartitionBlock:
    """The Data Designer object of a YAML ``selection_strategy`` (its own checks: ``start <= end``, ...)."""
    try:
        if isinstance(value, IndexRangeModel):
            return IndexRange(start=value.start, end=value.end)
        return PartitionBlock(index=value.index, num_partitions=value.num_partitions)
    except ValidationError as exc:
        raise ValueError(_model_error(exc, value)) from None


def _import_path(value: str, *, label: str) -> Any:
    if ":" not in value:
        raise ValueError(f"{label} {value!r} must be 'module:function'")
    module_name, _, attr = value.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"{label} {value!r} does not import: {type(exc).__name__}: {exc}") from exc
    try:
        target = getattr(module, attr)
    except AttributeError as exc:
        raise ValueError(f"{label} {value!r}: module {module_name!r} has no attribute {attr!r}") from exc
    if not callable(target):
        raise ValueError(f"{label} {value!r} is not callable")
    return target


def _model_error(exc: ValidationError, given: BaseModel) -> str:
    """A Data Designer model's refusal as one line, with the values given (``got start 4, end 1``)."""
    reason = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
    return f"{reason} (got {', '.join(f'{k} {v!r}' for k, v in given.model_dump().items())})"
