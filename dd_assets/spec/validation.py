"""Whole-workflow checks run when definitions load: model aliases and the columns flowing between stages.

Templates are checked against the workflow's column flow (:mod:`dd_assets.spec.column_flow`), the computation the
planned column schema uses too. Where columns cannot be known without running (an external asset, an
``on_success`` callback, a callable ``combine``), checks downstream of it are skipped rather than guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dd_assets.spec.definition_error import WorkflowDefinitionError
from dd_assets.spec.known_fields import did_you_mean
from dd_assets.spec.stage_models import used_model_configs

if TYPE_CHECKING:
    from dd_assets.spec.column_flow import StageColumns
    from dd_assets.spec.workflow import Stage, Workflow

Columns = set[str] | None  # None: not knowable at load time


def check_model_aliases(workflows: Sequence[Workflow]) -> None:
    """Two stages that define one model alias differently is an error (all stages share one registry)."""
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


def generated_columns(stage: Stage) -> set[str]:
    """Columns a stage's config generates (side-effect columns included)."""
    names: set[str] = set()
    for config in stage.builder.get_column_configs():
        names.add(config.name)
        names.update(getattr(config, "side_effect_columns", []) or [])
    return names


def check_column_flow(workflow: Workflow, flow: dict[str, StageColumns]) -> None:
    """Check that templates read columns that exist and that zip joins do not clash (``flow``: the column flow)."""
    outputs: dict[str, Columns] = {
        name: None if columns.output is None else {c.name for c in columns.output} for name, columns in flow.items()
    }
    generated = {stage.name: generated_columns(stage) for stage in workflow.stages}
    for stage in workflow.topological_order():

        def fail(message: str, field: str, stage: Stage = stage) -> WorkflowDefinitionError:
            return WorkflowDefinitionError(message, workflow=workflow.name, stage=stage.name, field=field)

        if stage.combine == "zip":
            _check_zip(stage, generated, outputs, fail)
        available = flow[stage.name].available
        if available is None:
            continue
        for config in stage.builder.get_column_configs():
            readable = set(available) - {config.name}  # a column cannot read itself
            missing = sorted(set(getattr(config, "required_columns", []) or []) - readable)
            if missing:
                hints = "".join(did_you_mean(name, readable) for name in missing)
                raise fail(
                    f"column {config.name!r} reads {', '.join(map(repr, missing))}, which neither this stage "
                    f"nor its upstreams produce{hints} (available: {', '.join(sorted(readable)) or 'none'})",
                    "config",
                )


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
