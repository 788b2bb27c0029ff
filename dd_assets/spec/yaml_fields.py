"""How each field of :class:`~dd_assets.spec.workflow.Stage` and ``Workflow`` is written in YAML.

Each field's YAML type, description and conversion to the Python argument; the field's name, default and numeric
range come from the Python class and :mod:`dd_assets.spec.field_rules`. The same values are written in a
Component's inline ``workflow`` attribute.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from data_designer.config.processor_types import ProcessorConfigT
from data_designer.config.seed import IndexRange, PartitionBlock, SamplingStrategy
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
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


@dataclass(frozen=True)
class YamlField:
    """How one field of :class:`Stage` or :class:`Workflow` is written in YAML (and in the Component's workflow).

    The field's name, default and numeric range come from the Python class (its dataclass field and
    ``STAGE_BOUNDS`` / ``WORKFLOW_BOUNDS``); this says only what the YAML value looks like and how it becomes the
    Python argument.
    """

    annotation: Any
    description: str | None = None
    convert: Callable[[Any, Path], Any] | None = None  # YAML value -> Python argument; a ValueError refuses it
    key: str | None = None  # the YAML key, where it is not the Python name
    schema: dict[str, Any] = field(default_factory=dict)  # more JSON Schema keywords


def _config(value: str | dict[str, Any], base_dir: Path) -> Path | dict[str, Any]:
    if isinstance(value, dict):
        return resolve_seed_path(copy.deepcopy(value), base_dir)
    path = (base_dir / value).resolve()
    if not path.is_file():
        raise ValueError(f"config file {value!r} not found (looked at {path})")
    return path


def _depends_on(value: list[str], base_dir: Path) -> list[str | dg.AssetKey]:
    return [dg.AssetKey(dep.split("/")) if "/" in dep else dep for dep in value]


def _processors(value: list[dict[str, Any]], base_dir: Path) -> list[Any]:
    try:
        return [TypeAdapter(ProcessorConfigT).validate_python(p) for p in value]
    except ValidationError as exc:
        raise ValueError(f"invalid processor config: {exc.errors(include_url=False)[0]['msg']}") from exc


def _on_success(value: str, base_dir: Path) -> Any:
    return _import_path(value, label="on_success")


def _combine(value: str, base_dir: Path) -> Any:
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


def _automation(value: AutomationModel, base_dir: Path) -> dg.AutomationCondition | None:
    return automation_condition(value)


def _selection(value: IndexRangeModel | PartitionBlockModel, base_dir: Path) -> IndexRange | PartitionBlock:
    try:
        return _selection_strategy(value)
    except ValidationError as exc:
        raise ValueError(_model_error(exc, value)) from None


STAGE_FIELDS: dict[str, YamlField] = {
    "name": YamlField(str, "Stage name: letters, digits, '_' and '-'; unique in the workflow."),
    "config": YamlField(
        str | dict[str, Any],
        "Path (relative to the YAML file) to a Data Designer config file, or an inline mapping.",
        _config,
    ),
    "depends_on": YamlField(list[str], "Upstream stage names, or asset key paths such as 'raw/docs'.", _depends_on),
    "num_records": YamlField(StrictInt | None, "Records to generate (default: the seed's rows)."),
    "output_processors": YamlField(
        list[dict[str, Any]], "Data Designer processor configs run on the stage output.", _processors
    ),
    "output": YamlField(str, "'final' or 'processor:<name>'."),
    "on_success": YamlField(str | None, "'module:function' called with the artifact dir.", _on_success),
    "on_success_version": YamlField(str | None, "Version of on_success (in the code version)."),
    "allow_empty": YamlField(StrictBool, "Accept an empty output; downstream stages are skipped."),
    "sampling_strategy": YamlField(Literal[tuple(s.value for s in SamplingStrategy)]),  # type: ignore[misc]
    "selection_strategy": YamlField(IndexRangeModel | PartitionBlockModel | None, convert=_selection),
    "combine": YamlField(str | None, "'concat', 'zip' or 'module:function'.", _combine),
    "description": YamlField(str | None),
    "completion_threshold": YamlField(
        Number, "Fewer than this share of the requested records fails the stage before it publishes."
    ),
    "min_judge_score": YamlField(
        Number | None,
        "When set, the judge_score check wants this mean score of the llm-judge columns (labelled options: "
        "docs/yaml.md).",
    ),
    "partitions": YamlField(
        StrictInt | None,
        "Split the stage into this many static partitions, keys '0'..'N-1' zero-padded (docs/scale.md).",
    ),
    "token_budget": YamlField(
        StrictInt | None, "Fail, keeping finished batches, once the stage used this many tokens (docs/reference.md)."
    ),
    "stall_timeout_s": YamlField(
        Number | None,
        "Fail when the stage's model calls wait this long without a success (default: the resource's).",
    ),
    "automation_condition": YamlField(AutomationModel | None, AUTOMATION_DESCRIPTION, _automation, key="automation"),
    "owners": YamlField(list[str], OWNERS_DESCRIPTION),
    "tags": YamlField(dict[str, str], TAGS_DESCRIPTION),
}
"""Every :class:`Stage` field as a YAML key: ``StageModel`` and the JSON Schema are generated from it."""

WORKFLOW_FIELDS: dict[str, YamlField] = {
    "name": YamlField(
        str, "Workflow name (letters, digits and '_'): the asset group and the first part of every asset key."
    ),
    "stages": YamlField(list[Any], schema={"minItems": 1}),  # list[StageModel], set once StageModel exists
    "max_num_records": YamlField(StrictInt, "Upper bound for num_records of every stage and run."),
    "execution": YamlField(
        Literal[EXECUTION_MODES],  # type: ignore[valid-type]
        "per_stage: one Dagster step per stage; concurrent: one step runs ready stages at the same time.",
    ),
    "max_concurrent_stages": YamlField(StrictInt | None, "In concurrent execution, at most this many stages at once."),
    "automation_condition": YamlField(
        AutomationModel | None,
        "The automation of every stage that sets none. " + AUTOMATION_DESCRIPTION,
        _automation,
        key="automation",
    ),
    "owners": YamlField(list[str], OWNERS_DESCRIPTION + " Of every stage."),
    "tags": YamlField(dict[str, str], TAGS_DESCRIPTION + " Of every stage."),
}
"""Every :class:`Workflow` field as a YAML key (``stages`` holds ``StageModel`` entries)."""


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


def _selection_strategy(selection: IndexRangeModel | PartitionBlockModel | None) -> IndexRange | PartitionBlock | None:
    """The Data Designer object of a YAML ``selection_strategy`` (its own checks: ``start <= end``, ...)."""
    if isinstance(selection, IndexRangeModel):
        return IndexRange(start=selection.start, end=selection.end)
    if isinstance(selection, PartitionBlockModel):
        return PartitionBlock(index=selection.index, num_partitions=selection.num_partitions)
    return selection


def _model_error(exc: ValidationError, given: BaseModel | None) -> str:
    """A Data Designer model's refusal as one line, with the values given (``got start 4, end 1``)."""
    reason = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
    if given is None:
        return reason
    return f"{reason} (got {', '.join(f'{k} {v!r}' for k, v in given.model_dump().items())})"
