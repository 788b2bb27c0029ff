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

Every mistake raises a :class:`~dd_assets.spec.WorkflowDefinitionError` naming the file, the workflow,
the stage and the field.
"""

from __future__ import annotations

import copy
import importlib
import json
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import yaml
from data_designer.config.processor_types import ProcessorConfigT
from data_designer.config.seed import IndexRange, PartitionBlock
from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, ValidationError

from dd_assets import strict_yaml
from dd_assets.known_fields import did_you_mean
from dd_assets.spec import DEFAULT_MAX_NUM_RECORDS, Stage, Workflow, WorkflowDefinitionError, resolve_seed_path

SCHEMA_FILE = Path(__file__).with_name("workflow.schema.json")


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


class StageModel(BaseModel):
    """One stage in a workflow YAML file (see ``docs/yaml.md``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Stage name: letters, digits, '_' and '-'; unique in the workflow.")
    config: str | dict[str, Any] = Field(
        description="Path (relative to the YAML file) to a Data Designer config file, or an inline mapping."
    )
    depends_on: list[str] = Field(
        default_factory=list, description="Upstream stage names, or asset key paths such as 'raw/docs'."
    )
    num_records: StrictInt | None = Field(
        default=None, ge=1, description="Records to generate (default: the seed's rows)."
    )
    output_processors: list[dict[str, Any]] = Field(
        default_factory=list, description="Data Designer processor configs run on the stage output."
    )
    output: str = Field(default="final", description="'final' or 'processor:<name>'.")
    on_success: str | None = Field(default=None, description="'module:function' called with the artifact dir.")
    on_success_version: str | None = Field(default=None, description="Version of on_success (in the code version).")
    allow_empty: bool = Field(default=False, description="Accept an empty output; downstream stages are skipped.")
    sampling_strategy: Literal["ordered", "shuffle"] = Field(default="ordered")
    selection_strategy: IndexRangeModel | PartitionBlockModel | None = Field(default=None)
    combine: str | None = Field(default=None, description="'concat', 'zip' or 'module:function'.")
    description: str | None = Field(default=None)
    partitions: StrictInt | None = Field(
        default=None,
        ge=2,
        description="Split the stage into this many static partitions, keys '0'..'N-1' zero-padded (docs/scale.md).",
    )
    token_budget: StrictInt | None = Field(
        default=None,
        ge=1,
        description="Fail, keeping finished batches, once the stage used this many tokens (docs/reference.md).",
    )
    stall_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Fail when the stage's model calls wait this long without a success (default: the resource's).",
    )


class WorkflowModel(BaseModel):
    """A workflow YAML file."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"title": "dd_assets workflow"})

    name: str = Field(
        description="Workflow name (letters, digits and '_'): the asset group and the first part of every asset key."
    )
    stages: list[StageModel] = Field(min_length=1)
    max_num_records: StrictInt = Field(
        default=DEFAULT_MAX_NUM_RECORDS, ge=1, description="Upper bound for num_records of every stage and run."
    )
    execution: Literal["per_stage", "concurrent"] = Field(
        default="per_stage",
        description="per_stage: one Dagster step per stage; concurrent: one step runs ready stages at the same time.",
    )
    max_concurrent_stages: StrictInt | None = Field(
        default=None, ge=1, description="In concurrent execution, at most this many stages at once."
    )


def workflow_json_schema() -> dict[str, Any]:
    """The JSON Schema of the YAML format (what ``workflow.schema.json`` ships)."""
    schema = WorkflowModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


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

        config: Any = stage.config
        if isinstance(config, dict):
            config = resolve_seed_path(copy.deepcopy(config), base_dir)
        if isinstance(config, str):
            path = (base_dir / config).resolve()
            if not path.is_file():
                raise fail(f"config file {config!r} not found (looked at {path})", "config")
            config = path
        try:
            processors = [TypeAdapter(ProcessorConfigT).validate_python(p) for p in stage.output_processors]
        except ValidationError as exc:
            raise fail(
                f"invalid processor config: {exc.errors(include_url=False)[0]['msg']}", "output_processors"
            ) from exc
        depends_on: list[str | dg.AssetKey] = [
            dg.AssetKey(dep.split("/")) if "/" in dep else dep for dep in stage.depends_on
        ]
        combine: Any = stage.combine
        if combine is not None and combine not in ("concat", "zip"):
            try:
                combine = _import_path(combine, label="combine")
            except ValueError as exc:
                raise fail(str(exc), "combine") from exc
        on_success = None
        if stage.on_success is not None:
            try:
                on_success = _import_path(stage.on_success, label="on_success")
            except ValueError as exc:
                raise fail(str(exc), "on_success") from exc
        try:
            selection = _selection_strategy(stage.selection_strategy)
        except ValidationError as exc:
            raise fail(_model_error(exc, stage.selection_strategy), "selection_strategy") from None
        stages.append(
            Stage(
                name=stage.name,
                config=config,
                depends_on=depends_on,
                num_records=stage.num_records,
                output_processors=processors,
                output=stage.output,
                on_success=on_success,
                on_success_version=stage.on_success_version,
                allow_empty=stage.allow_empty,
                sampling_strategy=stage.sampling_strategy,
                selection_strategy=selection,
                combine=combine,
                description=stage.description,
                partitions=stage.partitions,
                token_budget=stage.token_budget,
                stall_timeout_s=stage.stall_timeout_s,
            )
        )
    try:
        return Workflow(
            name=model.name,
            stages=stages,
            max_num_records=model.max_num_records,
            execution=model.execution,
            max_concurrent_stages=model.max_concurrent_stages,
        )
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
    :class:`~dd_assets.load_errors.WorkflowLoadFailure` and the other files still load (except under definitions
    validation: see :mod:`dd_assets.load_errors`); without it, the first error is raised.
    """
    from dd_assets.load_errors import WorkflowLoadFailure, keep_or_raise

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
    """Regenerate the shipped JSON Schema (``python -m dd_assets.yaml_loader``)."""
    path.write_text(json.dumps(workflow_json_schema(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_schema()
    print(f"wrote {SCHEMA_FILE}")
