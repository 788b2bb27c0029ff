"""Whole-workflow checks run when definitions load: model aliases and the columns flowing between stages.

Column flow follows each stage's output columns where they can be known without running anything (seed
files' headers, generated columns, drop processors, schema transforms). Where they cannot (an external
asset, an ``on_success`` callback, a callable ``combine``), checks downstream of it are skipped rather
than guessed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
from data_designer.config.processors import DropColumnsProcessorConfig, SchemaTransformProcessorConfig

from dd_assets.seeds import local_seed_files
from dd_assets.stage_models import used_model_configs

if TYPE_CHECKING:
    from dd_assets.spec import Stage, Workflow

Columns = set[str] | None  # None: not knowable at load time


def check_model_aliases(workflows: Sequence[Workflow]) -> None:
    """Two stages that define one model alias differently is an error (all stages share one registry)."""
    from dd_assets.spec import WorkflowDefinitionError

    seen: dict[str, tuple[str, str, dict]] = {}
    for workflow in workflows:
        for stage in workflow.stages:
            for model in used_model_configs(stage.builder):
                dumped = model.model_dump(mode="json")
                if model.alias not in seen:
                    seen[model.alias] = (workflow.name, stage.name, dumped)
                    continue
                other_workflow, other_stage, other = seen[model.alias]
                if other != dumped:
                    raise WorkflowDefinitionError(
                        f"model alias {model.alias!r} is defined differently by workflow {other_workflow!r}, "
                        f"stage {other_stage!r} (model {other['model']!r} on provider {other['provider']!r} vs "
                        f"model {model.model!r} on provider {model.provider!r}); all stages share one model "
                        "registry, so give one of them another alias",
                        workflow=workflow.name,
                        stage=stage.name,
                        field="config.model_configs",
                    )


def seed_file_columns(stage: Stage) -> Columns:
    """Columns of a root stage's own local seed file(s), or ``None`` when they cannot be read cheaply."""
    names = seed_file_columns_ordered(stage)
    return None if names is None else set(names)


def seed_file_columns_ordered(stage: Stage) -> list[str] | None:
    """:func:`seed_file_columns` in file order (``[]`` without a seed)."""
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
                return [c.strip() for c in next(csv.reader(handle), [])]
    except (OSError, ValueError):
        return None
    return None


def generated_columns(stage: Stage) -> set[str]:
    """Columns a stage's config generates (side-effect columns included)."""
    names: set[str] = set()
    for config in stage.builder.get_column_configs():
        names.add(config.name)
        names.update(getattr(config, "side_effect_columns", []) or [])
    return names


def _after_processors(columns: Columns, processors, output: str) -> Columns:
    if columns is None:
        return None
    wanted = output.removeprefix("processor:") if output.startswith("processor:") else None
    remaining = set(columns)
    for processor in processors:
        if isinstance(processor, DropColumnsProcessorConfig):
            remaining -= set(processor.column_names)
        if wanted is not None and processor.name == wanted:
            if isinstance(processor, SchemaTransformProcessorConfig):
                return set(processor.template)
            return None
    return None if wanted is not None else remaining


def check_column_flow(workflow: Workflow) -> dict[str, Columns]:
    """Check that templates read columns that exist and that zip joins do not clash; return output columns."""
    from dd_assets.spec import WorkflowDefinitionError

    outputs: dict[str, Columns] = {}
    generated: dict[str, set[str]] = {}
    for stage in workflow.topological_order():

        def fail(message: str, field: str, stage: Stage = stage) -> WorkflowDefinitionError:
            return WorkflowDefinitionError(message, workflow=workflow.name, stage=stage.name, field=field)

        generated[stage.name] = generated_columns(stage)
        upstream: list[Columns] = [outputs[d] if isinstance(d, str) else None for d in stage.depends_on]
        if not stage.depends_on:
            seed = seed_file_columns(stage)
        elif len(upstream) == 1 or stage.combine in ("concat", "zip"):
            seed = None if any(u is None for u in upstream) else set().union(*upstream)
        else:
            seed = None  # a callable combine decides its own columns

        if stage.combine == "zip":
            _check_zip(stage, generated, outputs, fail)

        available = None if seed is None else seed | generated[stage.name]
        if available is not None:
            for config in stage.builder.get_column_configs():
                missing = sorted(set(getattr(config, "required_columns", []) or []) - available)
                if missing:
                    raise fail(
                        f"column {config.name!r} reads {', '.join(map(repr, missing))}, which neither this stage "
                        f"nor its upstreams produce (available: {', '.join(sorted(available)) or 'none'})",
                        "config",
                    )

        if stage.on_success is not None or available is None:
            outputs[stage.name] = None
            continue
        dropped = {c.name for c in stage.builder.get_column_configs() if getattr(c, "drop", False)}
        main = _after_processors(available - dropped, stage.builder.get_processor_configs(), "final")
        if stage.output_processors:
            outputs[stage.name] = _after_processors(main, stage.output_processors, stage.output)
        elif stage.output.startswith("processor:"):
            outputs[stage.name] = _after_processors(
                available - dropped, stage.builder.get_processor_configs(), stage.output
            )
        else:
            outputs[stage.name] = main
    return outputs


def _check_zip(stage: Stage, generated: dict[str, set[str]], outputs: dict[str, Columns], fail) -> None:
    names = [d for d in stage.depends_on if isinstance(d, str)]
    for i, left in enumerate(names):
        for right in names[i + 1 :]:
            left_columns, right_columns = outputs.get(left), outputs.get(right)
            if left_columns is None or right_columns is None:
                continue  # not knowable at load time: checked on the data at run time
            shared = left_columns & right_columns
            clash = (generated[left] | generated[right]) & shared
            if clash:
                raise fail(
                    f"zip upstreams {left!r} and {right!r} both have column(s) {', '.join(sorted(map(repr, clash)))} "
                    "that one of them generates; rename one, or drop it with a processor",
                    "combine",
                )
