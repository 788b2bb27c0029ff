"""Each stage's columns before its first run: name, type where known, and how the column is made.

The definition metadata ``dagster/column_schema`` of a stage is derived from its Data Designer config and its
upstreams', following the same column flow as :mod:`dd_assets.validation`: seed columns (with the stage or seed
file they come from), then the columns the config generates (Data Designer's own output order can differ from run
to run; the materialized schema shows the real one), minus dropped columns and drop processors; a
processor output (``output="processor:<name>"``) of a schema transform has its template's columns. Where the
columns cannot be known without running (an external upstream, a callable ``combine``, ``on_success``), the stage
gets no column schema before its first run. A materialization then records the real Arrow types with the same
descriptions (:func:`dd_assets.metadata.column_schema`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import dagster as dg
from data_designer.config.processors import DropColumnsProcessorConfig, SchemaTransformProcessorConfig

from dd_assets.spec import Stage, Workflow
from dd_assets.validation import seed_file_columns_ordered

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
        return Column(name, {"str": "string"}.get(dtype, dtype), f"expression: {_short(config.expr)}")  # type: ignore[attr-defined]
    if kind.startswith("llm"):
        alias = getattr(config, "model_alias", "?")
        text = f"{kind} column on model alias {alias!r}: prompt {_short(getattr(config, 'prompt', ''))!r}"
        scores = [s.name for s in getattr(config, "scores", []) or []]
        if scores:
            text += f"; judge scores {', '.join(scores)}"
        return Column(name, COLUMN_TYPES.get(kind, "string"), text)
    return Column(name, COLUMN_TYPES.get(kind, "any"), f"{kind or 'custom'} column")


@functools.cache
def workflow_columns(workflow: Workflow) -> dict[str, tuple[Column, ...] | None]:
    """Each stage's output columns, in order, or ``None`` when they cannot be known before a run."""
    outputs: dict[str, tuple[Column, ...] | None] = {}
    for stage in workflow.topological_order():
        outputs[stage.name] = _stage_columns(workflow, stage, outputs)
    return outputs


def _stage_columns(
    workflow: Workflow, stage: Stage, outputs: dict[str, tuple[Column, ...] | None]
) -> tuple[Column, ...] | None:
    if stage.on_success is not None or (len(stage.depends_on) > 1 and callable(stage.combine)):
        return None
    seed: dict[str, Column] = {}
    if not stage.depends_on:
        names = seed_file_columns_ordered(stage)
        if names is None:
            return None
        source = stage.builder.get_seed_config()
        where = getattr(getattr(source, "source", None), "path", "the seed") if source is not None else "the seed"
        for name in names:
            seed[name] = Column(name, "any", f"seed column from {where}")
    for dep in stage.depends_on:
        upstream = outputs.get(dep) if isinstance(dep, str) else None
        if upstream is None:
            return None
        for column in upstream:
            if column.name in seed:
                continue  # zip: shared columns hold equal values and appear once; concat: one column
            seed[column.name] = Column(column.name, column.type, column.how, column.origin or dep)
    columns = dict(seed)
    dropped: set[str] = set()
    for config in stage.builder.get_column_configs():
        columns[config.name] = described = describe_column(config)
        for side_effect in getattr(config, "side_effect_columns", []) or []:
            columns[side_effect] = Column(side_effect, "any", f"side output of column {described.name!r}")
        if getattr(config, "drop", False):
            dropped.add(config.name)
    for name in dropped:
        columns.pop(name, None)
    return _after_processors(columns, [*stage.builder.get_processor_configs(), *stage.output_processors], stage.output)


def _after_processors(columns: dict[str, Column], processors: list, output: str) -> tuple[Column, ...] | None:
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


def stage_column_schema(workflow: Workflow, stage: Stage) -> dg.TableSchema | None:
    """The ``dagster/column_schema`` of a stage before any run, or ``None`` when it cannot be known."""
    columns = workflow_columns(workflow).get(stage.name)
    if columns is None:
        return None
    return dg.TableSchema(columns=[dg.TableColumn(c.name, c.type, description=c.description) for c in columns])
