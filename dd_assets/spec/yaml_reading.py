"""Reading a workflow YAML mapping: its pydantic models, checked keys and values, then the Python objects.

The models are made from the Python classes' field definitions (:mod:`dd_assets.spec.field_specs`); this module is
given the classes it builds (``Workflow.from_yaml`` passes them), so it needs no import of them.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import PydanticUndefined

from dd_assets.spec import strict_yaml
from dd_assets.spec.definition_error import WorkflowDefinitionError
from dd_assets.spec.field_specs import Bounds, FieldSpec, field_specs
from dd_assets.spec.known_fields import did_you_mean

if TYPE_CHECKING:
    from dd_assets.spec.workflow import Stage, Workflow


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


def model_from_fields(name: str, cls: type, table: dict[str, FieldSpec], doc: str, **config: Any) -> type[BaseModel]:
    """A pydantic model of ``cls``'s init fields as their definitions (``table``: ``field_specs(cls)``) write them;
    refuses a class with a field that has no definition."""
    python_fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    missing, extra = sorted(set(python_fields) - set(table)), sorted(set(table) - set(python_fields))
    if missing or extra:
        raise TypeError(
            f"{name}: the field definitions must name every field of {cls.__name__} (missing {missing}, not fields "
            f"{extra}); declare each field with spec_field"
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
            entry.yaml,
            Field(
                default=default,
                description=entry.description,
                json_schema_extra=_bounds_schema(entry.bounds, entry.schema),
            ),
        )
    return create_model(name, __config__=ConfigDict(extra="forbid", **config), __doc__=doc, **fields)


@functools.cache
def yaml_models(workflow_type: type[Workflow], stage_type: type[Stage]) -> tuple[type[BaseModel], type[BaseModel]]:
    """The pydantic models of a workflow file and of one of its stages: ``(WorkflowModel, StageModel)``."""
    stage_model = model_from_fields(
        "StageModel",
        stage_type,
        field_specs(stage_type),
        "One stage in a workflow YAML file (see ``docs/yaml.md``).",
    )
    table = field_specs(workflow_type)
    table["stages"] = dataclasses.replace(table["stages"], yaml=list[stage_model])
    workflow_model = model_from_fields(
        "WorkflowModel",
        workflow_type,
        table,
        "A workflow YAML file.",
        json_schema_extra={"title": "dd_assets workflow"},
    )
    return workflow_model, stage_model


def python_arguments(
    model: BaseModel, table: dict[str, FieldSpec], base_dir: Path, fail: Callable[[str, str], Exception]
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


def _pydantic_error(
    exc: ValidationError, data: dict, file: str, model: type[BaseModel], stage_model: type[BaseModel]
) -> WorkflowDefinitionError:
    error = exc.errors(include_url=False)[0]
    loc = list(error["loc"])
    workflow = data.get("name") if isinstance(data.get("name"), str) else None
    stage = None
    if len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int):
        stages = data.get("stages") or []
        entry = stages[loc[1]] if loc[1] < len(stages) else {}
        stage = entry.get("name") if isinstance(entry, dict) and isinstance(entry.get("name"), str) else f"#{loc[1]}"
        loc = loc[2:]
        model = stage_model
    # Keep the field path, not pydantic's union branch names ("config.str", "config.dict[str,any]").
    fields = model.model_fields
    field = str(loc[0]) if loc and str(loc[0]) in fields else (".".join(str(p) for p in loc) or None)
    message = error["msg"]
    if "input" in error and error["type"] != "extra_forbidden":
        message += f" (got {error['input']!r})"
    if error["type"] == "extra_forbidden" and loc:
        message = f"unknown key {loc[-1]!r}{did_you_mean(str(loc[-1]), list(model.model_fields))}"
    return WorkflowDefinitionError(message, workflow=workflow, stage=stage, field=field, file=file)


def workflow_from_data(
    data: Any, *, base_dir: Path, file: str, workflow_type: type[Workflow], stage_type: type[Stage]
) -> Workflow:
    """Build a ``workflow_type`` of ``stage_type`` stages from a parsed YAML mapping; paths resolve against
    ``base_dir``."""
    if not isinstance(data, dict):
        raise WorkflowDefinitionError(
            f"expected a mapping with 'name' and 'stages', got {type(data).__name__}", file=file
        )
    workflow_model, stage_model = yaml_models(workflow_type, stage_type)
    try:
        model = workflow_model.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_error(exc, data, file, workflow_model, stage_model) from exc

    stages = []
    for stage in model.stages:

        def fail(message: str, field: str, stage_name: str = stage.name) -> WorkflowDefinitionError:
            return WorkflowDefinitionError(message, workflow=model.name, stage=stage_name, field=field, file=file)

        stages.append(stage_type(**python_arguments(stage, field_specs(stage_type), base_dir, fail)))

    def fail_workflow(message: str, field: str) -> WorkflowDefinitionError:
        return WorkflowDefinitionError(message, workflow=model.name, field=field, file=file)

    arguments = python_arguments(model, field_specs(workflow_type), base_dir, fail_workflow)
    try:
        return workflow_type(**{**arguments, "stages": stages})
    except WorkflowDefinitionError as exc:
        raise exc.with_file(file) from exc.__cause__


def read_workflow_yaml(path: str | Path, *, workflow_type: type[Workflow], stage_type: type[Stage]) -> Workflow:
    """Load one workflow YAML file as a ``workflow_type`` of ``stage_type`` stages."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowDefinitionError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from exc
    try:
        data = strict_yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WorkflowDefinitionError(f"invalid YAML: {exc}", file=str(path)) from exc
    return workflow_from_data(
        data, base_dir=path.parent, file=str(path), workflow_type=workflow_type, stage_type=stage_type
    )
