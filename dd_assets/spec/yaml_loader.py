"""The YAML workflow format: pydantic models, the loader, and the JSON Schema shipped with the package.

A workflow file::

    name: quickstart
    stages:
      - name: customers
        config: configs/customers.yaml   # relative to this file, or an inline mapping
        num_records: 300
      - name: orders
        config: configs/orders.yaml
        depends_on: [customers, raw/docs]   # stage names, or asset key paths with '/'
        combine: my_pkg.joins:first_rows    # 'concat', 'zip' or module:function
        output_processors:
          - {processor_type: drop_columns, name: drop_pricing, column_names: [unit_price]}

Every mistake raises a :class:`~dd_assets.spec.workflow.WorkflowDefinitionError` naming the file, the workflow,
the stage and the field.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
import yaml
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
    create_model,
)
from pydantic_core import PydanticUndefined

from dd_assets.spec import strict_yaml
from dd_assets.spec.known_fields import did_you_mean
from dd_assets.spec.workflow import (
    EXECUTION_MODES,
    STAGE_BOUNDS,
    WORKFLOW_BOUNDS,
    Bounds,
    Stage,
    Workflow,
    WorkflowDefinitionError,
    resolve_seed_path,
)

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "workflow.schema.json"  # shipped at the package root

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


def _json_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_json_default(v) for v in value]
    return value


def _bounds_schema(bounds: Bounds | None, more: dict[str, Any]) -> Callable[[dict[str, Any]], None] | None:
    """Puts a range on the number branch of a field's schema (``anyOf: [integer, null]``), and ``more`` on it."""
    if bounds is None and not more:
        return None

    def extra(schema: dict[str, Any]) -> None:
        if bounds is not None:
            numbers = [b for b in schema.get("anyOf", []) if b.get("type") in ("integer", "number")]
            (numbers[0] if numbers else schema).update(bounds.json_schema())
        schema.update(more)

    return extra


def _model_from_fields(
    name: str, cls: type, table: dict[str, YamlField], bounds: dict[str, Bounds], doc: str, **config: Any
) -> type[BaseModel]:
    """A pydantic model of ``cls``'s init fields, as ``table`` writes them; refuses a table that misses a field."""
    python_fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    missing, extra = sorted(set(python_fields) - set(table)), sorted(set(table) - set(python_fields))
    if missing or extra:
        raise TypeError(
            f"{name}: the YAML table must name every field of {cls.__name__} (missing {missing}, not fields {extra})"
        )
    fields: dict[str, Any] = {}
    for field_name, python in python_fields.items():
        entry = table[field_name]
        if python.default is not dataclasses.MISSING:
            default = _json_default(python.default)
        elif python.default_factory is not dataclasses.MISSING:
            default = _json_default(python.default_factory())
        else:
            default = PydanticUndefined
        fields[entry.key or field_name] = (
            entry.annotation,
            Field(
                default=default,
                description=entry.description,
                json_schema_extra=_bounds_schema(bounds.get(field_name), entry.schema),
            ),
        )
    return create_model(name, __config__=ConfigDict(extra="forbid", **config), __doc__=doc, **fields)


StageModel = _model_from_fields(
    "StageModel", Stage, STAGE_FIELDS, STAGE_BOUNDS, "One stage in a workflow YAML file (see ``docs/yaml.md``)."
)
WORKFLOW_FIELDS["stages"] = dataclasses.replace(WORKFLOW_FIELDS["stages"], annotation=list[StageModel])
WorkflowModel = _model_from_fields(
    "WorkflowModel",
    Workflow,
    WORKFLOW_FIELDS,
    WORKFLOW_BOUNDS,
    "A workflow YAML file.",
    json_schema_extra={"title": "dd_assets workflow"},
)


def python_arguments(
    model: BaseModel, table: dict[str, YamlField], base_dir: Path, fail: Callable[[str, str], Exception]
) -> dict[str, Any]:
    """The keyword arguments of the Python class for the keys a YAML mapping set (the others keep their defaults)."""
    arguments: dict[str, Any] = {}
    for name, entry in table.items():
        key = entry.key or name
        if key not in model.model_fields_set:
            continue
        value = getattr(model, key)
        if entry.convert is not None and value is not None:
            try:
                value = entry.convert(value, base_dir)
            except ValueError as exc:
                raise fail(str(exc), key) from exc.__cause__
        arguments[name] = value
    return arguments


def workflow_json_schema() -> dict[str, Any]:
    """The JSON Schema of the YAML format (what ``workflow.schema.json`` ships)."""
    schema = WorkflowModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def inline_workflow_schema() -> dict[str, Any]:
    """The workflow schema with its ``$defs`` written in place, to embed in another schema (the Component's)."""
    schema = WorkflowModel.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {key: value for key, value in inline(schema).items() if key not in ("title", "description", "type")}


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


def _pydantic_error(exc: ValidationError, data: dict, file: str, model: type[BaseModel]) -> WorkflowDefinitionError:
    error = exc.errors(include_url=False)[0]
    loc = list(error["loc"])
    workflow = data.get("name") if isinstance(data.get("name"), str) else None
    stage = None
    if len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int):
        stages = data.get("stages") or []
        entry = stages[loc[1]] if loc[1] < len(stages) else {}
        stage = entry.get("name") if isinstance(entry, dict) and isinstance(entry.get("name"), str) else f"#{loc[1]}"
        loc = loc[2:]
        model = StageModel
    # Keep the field path, not pydantic's union branch names ("config.str", "config.dict[str,any]").
    fields = model.model_fields
    field = str(loc[0]) if loc and str(loc[0]) in fields else (".".join(str(p) for p in loc) or None)
    message = error["msg"]
    if "input" in error and error["type"] != "extra_forbidden":
        message += f" (got {error['input']!r})"
    if error["type"] == "extra_forbidden" and loc:
        message = f"unknown key {loc[-1]!r}{did_you_mean(str(loc[-1]), list(model.model_fields))}"
    return WorkflowDefinitionError(message, workflow=workflow, stage=stage, field=field, file=file)


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


def workflow_from_mapping(data: Any, *, base_dir: Path, file: str = "<inline>") -> Workflow:
    """Build a :class:`Workflow` from the parsed YAML mapping; paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise WorkflowDefinitionError(
            f"expected a mapping with 'name' and 'stages', got {type(data).__name__}", file=file
        )
    try:
        model = WorkflowModel.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_error(exc, data, file, WorkflowModel) from exc

    stages = []
    for stage in model.stages:

        def fail(message: str, field: str, stage_name: str = stage.name) -> WorkflowDefinitionError:
            return WorkflowDefinitionError(message, workflow=model.name, stage=stage_name, field=field, file=file)

        stages.append(Stage(**python_arguments(stage, STAGE_FIELDS, base_dir, fail)))

    def fail_workflow(message: str, field: str) -> WorkflowDefinitionError:
        return WorkflowDefinitionError(message, workflow=model.name, field=field, file=file)

    arguments = python_arguments(model, WORKFLOW_FIELDS, base_dir, fail_workflow)
    try:
        return Workflow(**{**arguments, "stages": stages})
    except WorkflowDefinitionError as exc:
        raise exc.with_file(file) from exc.__cause__


def load_workflow_yaml(path: str | Path) -> Workflow:
    """Load one workflow YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowDefinitionError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from exc
    try:
        data = strict_yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WorkflowDefinitionError(f"invalid YAML: {exc}", file=str(path)) from exc
    return workflow_from_mapping(data, base_dir=path.parent, file=str(path))


def load_workflow_dir(directory: str | Path, failures: list | None = None) -> list[Workflow]:
    """Every ``*.yaml`` / ``*.yml`` workflow in a directory (sorted); a name used twice is an error.

    With ``failures`` (a list), a file that does not load is appended to it as a
    :class:`~dd_assets.assets.load_errors.WorkflowLoadFailure` and the other files still load (except under definitions
    validation: see :mod:`dd_assets.assets.load_errors`); without it, the first error is raised.
    """
    from dd_assets.spec.load_failures import WorkflowLoadFailure, keep_or_raise

    directory = Path(directory)
    if not directory.is_dir():
        raise WorkflowDefinitionError(f"workflows directory {str(directory)!r} does not exist")
    workflows: list[Workflow] = []
    seen: dict[str, Path] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            workflow = load_workflow_yaml(path)
            if workflow.name in seen:
                raise WorkflowDefinitionError(
                    f"workflow name already used by {seen[workflow.name]}",
                    workflow=workflow.name,
                    field="name",
                    file=str(path),
                )
        except WorkflowDefinitionError as exc:
            keep_or_raise(failures, WorkflowLoadFailure(file=str(path), error=exc))
            continue
        seen[workflow.name] = path
        workflows.append(workflow)
    return workflows


def write_schema(path: Path = SCHEMA_FILE) -> None:
    """Regenerate the shipped JSON Schema (``python -m dd_assets.spec.yaml_loader``)."""
    path.write_text(json.dumps(workflow_json_schema(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_schema()
    print(f"wrote {SCHEMA_FILE}")
