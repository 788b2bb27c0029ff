"""The columns flowing through a workflow, known before any run: one computation for validation and the UI.

Each stage's columns follow from its Data Designer config and its upstreams': seed columns (a root stage's seed file
header, or the upstreams' output columns), then the columns the config generates, minus dropped columns and drop
processors (config processors first, then ``output_processors``, as the stage run applies them); an output
``processor:<name>`` of a schema transform has its template's columns. Where columns cannot be known without running
(an external upstream, a callable ``combine`` of several upstreams, a seed file that cannot be read cheaply), they
are ``None``; an ``on_success`` callback makes only the stage's output unknown.

:mod:`dd_assets.spec.validation` checks templates against ``available`` (what a stage's columns can read);
:mod:`dd_assets.spec.column_schema` shows ``output`` as ``dagster/column_schema``.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
from data_designer.config.processors import DropColumnsProcessorConfig, SchemaTransformProcessorConfig

from dd_assets.spec.seed_files import local_seed_files

if TYPE_CHECKING:
    from dd_assets.spec.workflow import Stage, Workflow

PROMPT_CHARS = 80
SAMPLER_TYPES = {
    "uuid": "string",
    "category": "string",
    "subcategory": "string",
    "uniform": "float",
    "gaussian": "float",
    "scipy": "float",
    "binomial": "int",
    "poisson": "int",
    "bernoulli": "int",
    "bernoulli_mixture": "float",
    "datetime": "datetime",
    "timedelta": "timedelta",
    "person": "json",
    "person_from_faker": "json",
}
COLUMN_TYPES = {
    "llm-text": "string",
    "llm-code": "string",
    "llm-structured": "json",
    "llm-judge": "json",
    "embedding": "list<float>",
    "validation": "json",
    "seed-dataset": "any",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    how: str  # how the column is made
    origin: str | None = None  # the upstream stage that made it (None: this stage, or its seed file)

    @property
    def description(self) -> str:
        return self.how if self.origin is None else f"from stage {self.origin!r}: {self.how}"


def _short(text: str, limit: int = PROMPT_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _params(params: object) -> str:
    try:
        data = params.model_dump(mode="json", exclude_none=True)  # type: ignore[union-attr]
    except AttributeError:
        return ""
    data.pop("sampler_type", None)
    return _short(json.dumps(data, sort_keys=True, default=str), 120)


_TEST = re.compile(r"^\s*\{\{(?!.*\bif\b)(?=.*(?:==|!=|<|>|\b(?:and|or|not|in|is)\b)).*\}\}\s*$", re.DOTALL)


def _is_a_test(expr: str) -> bool:
    """Whether an expression is one ``{{ }}`` holding a comparison or a logic test, which renders 'True'/'False'."""
    return bool(_TEST.match(expr)) and expr.count("{{") == 1


def describe_column(config: object) -> Column:
    """Type and description of one generated column of a Data Designer config."""
    kind = str(getattr(config, "column_type", "")).replace("ColumnType.", "").lower()
    name = config.name  # type: ignore[attr-defined]
    if kind == "sampler":
        sampler = str(getattr(config, "sampler_type", "")).split(".")[-1].lower()
        convert = getattr(config, "convert_to", None)
        column_type = {"int": "int", "float": "float", "str": "string"}.get(
            str(convert), SAMPLER_TYPES.get(sampler, "any")
        )
        return Column(name, column_type, f"sampler {sampler} {_params(getattr(config, 'params', None))}".strip())
    if kind == "expression":
        dtype = str(getattr(config, "dtype", "str"))
        how = f"expression: {_short(config.expr)}"  # type: ignore[attr-defined]
        if "dtype" not in config.model_fields_set and _is_a_test(config.expr):  # type: ignore[attr-defined]
            how += " (text 'True'/'False': set dtype bool for booleans)"
        return Column(name, {"str": "string"}.get(dtype, dtype), how)
    if kind.startswith("llm"):
        alias = getattr(config, "model_alias", "?")
        text = f"{kind} column on model alias {alias!r}: prompt {_short(getattr(config, 'prompt', ''))!r}"
        scores = [s.name for s in getattr(config, "scores", []) or []]
        if scores:
            text += f"; judge scores {', '.join(scores)}"
        return Column(name, COLUMN_TYPES.get(kind, "string"), text)
    return Column(name, COLUMN_TYPES.get(kind, "any"), f"{kind or 'custom'} column")


@dataclass(frozen=True)
class StageColumns:
    """A stage's columns before any run (``None``: not knowable without running)."""

    available: dict[str, Column] | None  # seed and generated columns: what the stage's templates can read
    output: tuple[Column, ...] | None  # what the stage hands downstream, in order


def workflow_column_flow(workflow: Workflow) -> dict[str, StageColumns]:
    """Every stage's :class:`StageColumns`, by stage name."""
    flow: dict[str, StageColumns] = {}
    for stage in workflow.topological_order():
        flow[stage.name] = stage_columns(stage, {name: columns.output for name, columns in flow.items()})
    return flow


def stage_columns(stage: Stage, outputs: dict[str, tuple[Column, ...] | None]) -> StageColumns:
    """One stage's columns, given its upstream stages' output columns."""
    seed = _seed_columns(stage, outputs)
    if seed is None:
        return StageColumns(available=None, output=None)
    columns = dict(seed)
    dropped: set[str] = set()
    for config in stage.builder.get_column_configs():
        columns[config.name] = described = describe_column(config)
        for side_effect in getattr(config, "side_effect_columns", []) or []:
            columns[side_effect] = Column(side_effect, "any", f"side output of column {described.name!r}")
        if getattr(config, "drop", False):
            dropped.add(config.name)
    available = dict(columns)
    if stage.on_success is not None:
        return StageColumns(available=available, output=None)
    for name in dropped:
        columns.pop(name, None)
    processors = [*stage.builder.get_processor_configs(), *stage.output_processors]
    return StageColumns(available=available, output=_after_processors(columns, processors, stage.output))


def _seed_columns(stage: Stage, outputs: dict[str, tuple[Column, ...] | None]) -> dict[str, Column] | None:
    if not stage.depends_on:
        names = seed_file_columns(stage)
        if names is None:
            return None
        source = stage.builder.get_seed_config()
        where = getattr(getattr(source, "source", None), "path", "the seed") if source is not None else "the seed"
        return {name: Column(name, "any", f"seed column from {where}") for name in names}
    if len(stage.depends_on) > 1 and callable(stage.combine):
        return None  # a callable combine decides its own columns
    seed: dict[str, Column] = {}
    for dep in stage.depends_on:
        upstream = outputs.get(dep) if isinstance(dep, str) else None
        if upstream is None:
            return None
        for column in upstream:
            if column.name not in seed:  # zip: shared columns hold equal values and appear once; concat: one column
                seed[column.name] = Column(column.name, column.type, column.how, column.origin or dep)
    return seed


def _after_processors(columns: dict[str, Column], processors: list, output: str) -> tuple[Column, ...] | None:
    """Columns after the processors, in the order the stage run applies them, up to the selected processor output."""
    columns = dict(columns)
    wanted = output.removeprefix("processor:") if output.startswith("processor:") else None
    for processor in processors:
        if isinstance(processor, DropColumnsProcessorConfig):
            for name in processor.column_names:
                columns.pop(name, None)
        if wanted is not None and processor.name == wanted:
            if isinstance(processor, SchemaTransformProcessorConfig):
                return tuple(
                    Column(name, "any", f"schema transform {processor.name!r}: {_short(json.dumps(template))}")
                    for name, template in processor.template.items()
                )
            return None
    return None if wanted is not None else tuple(columns.values())


def seed_file_columns(stage: Stage) -> list[str] | None:
    """Columns of a root stage's own local seed file(s) in file order (``[]`` without a seed; ``None``: unknown)."""
    if stage.builder.get_seed_config() is None:
        return []
    files = local_seed_files(stage.builder)
    if not files:
        return None
    first = files[0]
    try:
        if first.suffix == ".parquet":
            return list(pq.read_schema(first).names)
        if first.suffix == ".jsonl":
            with open(first, encoding="utf-8") as handle:
                return list(json.loads(handle.readline()))
        if first.suffix == ".csv":
            with open(first, encoding="utf-8-sig", newline="") as handle:  # quoted names may hold "," or newlines
                return [name.strip() for name in next(csv.reader(handle), [])]
    except (OSError, ValueError, csv.Error):
        return None
    return None
