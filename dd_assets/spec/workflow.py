"""Workflow and stage specs: what a user declares, validated when it is built.

A :class:`Workflow` is a named DAG of :class:`Stage` objects. Each stage is one
``DataDesigner.create()`` call; ``depends_on`` names other stages of the same
workflow or any Dagster asset by ``dg.AssetKey``. Every mistake is raised as a
:class:`~dd_assets.spec.definition_error.WorkflowDefinitionError` that names the workflow, the stage and the field
(the checks: :mod:`dd_assets.spec.workflow_rules` and :mod:`dd_assets.spec.stage_rules`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import dagster as dg
from data_designer.config.base import ProcessorConfig
from data_designer.config.config_builder import DataDesignerConfigBuilder
from data_designer.config.seed import IndexRange, PartitionBlock, SamplingStrategy
from pydantic import Field, StrictBool, StrictInt

from dd_assets.spec.definition_error import WorkflowDefinitionError
from dd_assets.spec.field_rules import (
    DEFAULT_MAX_NUM_RECORDS,
    EXECUTION_MODES,
    MAX_STATIC_PARTITIONS,
    NUM_RECORDS_BOUNDS,
    TOKEN_BUDGET_BOUNDS,
    TOKEN_BUDGET_WHAT,
)
from dd_assets.spec.field_specs import Bounds, spec_field
from dd_assets.spec.known_fields import checked_dataclass_init
from dd_assets.spec.stage_config import StageConfig
from dd_assets.spec.workflow_rules import check_workflow
from dd_assets.spec.yaml_reading import read_workflow_yaml
from dd_assets.spec.yaml_values import (
    AUTOMATION_DESCRIPTION,
    OWNERS_DESCRIPTION,
    TAGS_DESCRIPTION,
    AutomationModel,
    ExecutionMode,
    IndexRangeModel,
    Number,
    PartitionBlockModel,
    SamplingStrategyName,
    automation_value,
    combine_value,
    config_value,
    on_success_callable,
    processor_configs,
    selection_value,
    upstreams,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from dd_assets.storage.dataset import StageDataset

CombineFn = Callable[[dict[str, "StageDataset"]], Union["pd.DataFrame", "pa.Table", str, Path]]
"""A join: gets every upstream as a :class:`StageDataset` keyed by upstream name, returns the combined seed."""

OUTPUT_PATTERN = r"^(final|processor:.+)$"

OnSuccessFn = Callable[[Path], Path | str]
"""Called with the stage's artifact directory after generation; returns the parquet file or directory to hand on."""


def _stage_error(reason: str, field_name: str | None, kwargs: dict[str, Any]) -> WorkflowDefinitionError:
    name = kwargs.get("name")
    return WorkflowDefinitionError(reason, stage=name if isinstance(name, str) else None, field=field_name)


def _workflow_error(reason: str, field_name: str | None, kwargs: dict[str, Any]) -> WorkflowDefinitionError:
    name = kwargs.get("name")
    return WorkflowDefinitionError(reason, workflow=name if isinstance(name, str) else None, field=field_name)


@checked_dataclass_init(_stage_error)
@dataclass(frozen=True, eq=False)
class Stage:
    """One Data Designer generation step, materialized as one Dagster asset.

    Args:
        name: ``[A-Za-z0-9_-]+``, unique in its workflow; the asset key is ``[workflow, name]``.
        config: the stage's Data Designer config (builder, ``DataDesignerConfig``, dict or file path).
        depends_on: upstream stage names of the same workflow, or ``dg.AssetKey`` of any other asset.
        num_records: records to generate; defaults to the seed's row count, then Data Designer's default.
        output_processors: processors run as a second ``create()`` over the stage output.
        output: ``"final"`` or ``"processor:<name>"`` to hand a processor artifact downstream.
        on_success: called with the artifact directory; its returned parquet path becomes the output.
        on_success_version: a version string for ``on_success``, part of the code version.
        allow_empty: an empty output succeeds and downstream stages are skipped without model calls.
        sampling_strategy: how the upstream seed is sampled (``ordered`` or ``shuffle``).
        selection_strategy: an ``IndexRange`` or ``PartitionBlock`` of the upstream seed.
        combine: ``"concat"``, ``"zip"`` or a callable; required with more than one upstream.
        description: shown in the Dagster UI.
        completion_threshold: the ``completion_rate`` check passes at generated / requested >= this.
        min_judge_score: when set, the ``judge_score`` check wants this mean score of the llm-judge columns.
        partitions: split the stage into partitions: an int N >= 2 (static keys ``"0"``..``"N-1"``, zero-padded
            to equal width) or any ``dg.PartitionsDefinition``. See ``docs/scale.md``.
        token_budget: the stage fails, keeping its finished batches, once its model calls used more input plus
            output tokens than this (a partitioned stage: per partition); the run config's ``token_budget``
            overrides it. See ``docs/reference.md``.
        stall_timeout_s: fail when the stage's model calls wait this long without one success; overrides
            ``DataDesignerResource.stall_timeout_s``.
        automation_condition: any ``dg.AutomationCondition`` (e.g. ``dg.AutomationCondition.eager()``: re-run
            when an upstream changes); replaces the workflow's. Not part of the code version.
        owners: asset owners (``"team:..."`` or an email), after the workflow's. Not part of the code version.
        tags: asset tags, over the workflow's. Not part of the code version.
    """

    name: str = spec_field(yaml=str, description="Stage name: letters, digits, '_' and '-'; unique in the workflow.")
    config: StageConfig = spec_field(
        yaml=str | dict[str, Any],
        description="Path (relative to the YAML file) to a Data Designer config file, or an inline mapping.",
        convert=config_value,
    )
    depends_on: Sequence[str | dg.AssetKey] = spec_field(
        (),
        yaml=list[str],
        description="Upstream stage names, or asset key paths such as 'raw/docs'.",
        convert=upstreams,
    )
    num_records: int | None = spec_field(
        None,
        yaml=StrictInt | None,
        description="Records to generate (default: the seed's rows).",
        bounds=NUM_RECORDS_BOUNDS,
    )
    output_processors: Sequence[ProcessorConfig] = spec_field(
        (),
        yaml=list[dict[str, Any]],
        description="Data Designer processor configs run on the stage output.",
        convert=processor_configs,
    )
    output: str = spec_field(
        "final",
        yaml=str,
        description="'final' or 'processor:<name>'.",
        schema={"pattern": OUTPUT_PATTERN},
        python=Annotated[str, Field(pattern=OUTPUT_PATTERN)],
        what="'final' or 'processor:<name>'",
    )
    on_success: OnSuccessFn | None = spec_field(
        None,
        yaml=str | None,
        description="'module:function' called with the artifact dir.",
        convert=on_success_callable,
        python=Callable | None,
        what="a callable",
    )
    on_success_version: str | None = spec_field(
        None, yaml=str | None, description="Version of on_success (in the code version).", what="a string"
    )
    allow_empty: bool = spec_field(
        False, yaml=StrictBool, description="Accept an empty output; downstream stages are skipped.", what="a boolean"
    )
    sampling_strategy: SamplingStrategy | str = spec_field(SamplingStrategy.ORDERED, yaml=SamplingStrategyName)
    selection_strategy: IndexRange | PartitionBlock | None = spec_field(
        None,
        yaml=IndexRangeModel | PartitionBlockModel | None,
        convert=selection_value,
        python=IndexRange | PartitionBlock | None,
        what="an IndexRange or a PartitionBlock",
    )
    combine: Literal["concat", "zip"] | CombineFn | None = spec_field(
        None,
        yaml=str | None,
        description="'concat', 'zip' or 'module:function'.",
        convert=combine_value,
        python=Literal["concat", "zip"] | Callable | None,
        what="'concat', 'zip' or a callable",
    )
    description: str | None = spec_field(None, yaml=str | None, what="a string")
    completion_threshold: float = spec_field(
        0.95,
        yaml=Number,
        description="Fewer than this share of the requested records fails the stage before it publishes.",
        bounds=Bounds(exclusive_minimum=0, maximum=1),
        what="a number in (0, 1]",
    )
    min_judge_score: float | None = spec_field(
        None,
        yaml=Number | None,
        description="When set, the judge_score check wants this mean score of the llm-judge columns (labelled "
        "options: docs/yaml.md).",
        what="a number",
    )
    partitions: int | dg.PartitionsDefinition | None = spec_field(
        None,
        yaml=StrictInt | None,
        description="Split the stage into this many static partitions, keys '0'..'N-1' zero-padded (docs/scale.md).",
        bounds=Bounds(minimum=2, maximum=MAX_STATIC_PARTITIONS),  # as a count of static partitions
    )
    token_budget: int | None = spec_field(
        None,
        yaml=StrictInt | None,
        description="Fail, keeping finished batches, once the stage used this many tokens (docs/reference.md).",
        bounds=TOKEN_BUDGET_BOUNDS,
        what=TOKEN_BUDGET_WHAT,
    )
    stall_timeout_s: float | None = spec_field(
        None,
        yaml=Number | None,
        description="Fail when the stage's model calls wait this long without a success (default: the resource's).",
        bounds=Bounds(exclusive_minimum=0),
        what="a number of seconds > 0",
    )
    automation_condition: dg.AutomationCondition | None = spec_field(
        None,
        yaml=AutomationModel | None,
        description=AUTOMATION_DESCRIPTION,
        convert=automation_value,
        key="automation",
    )
    owners: Sequence[str] = spec_field((), yaml=list[str], description=OWNERS_DESCRIPTION)
    tags: Mapping[str, str] = spec_field(default_factory=dict, yaml=dict[str, str], description=TAGS_DESCRIPTION)

    # Filled in by validation: the config as a builder, with the user's object left untouched.
    builder: DataDesignerConfigBuilder = field(init=False, repr=False)
    # Filled in by validation: ``partitions`` as a Dagster partitions definition (``None`` when unpartitioned).
    partitions_def: dg.PartitionsDefinition | None = field(init=False, repr=False, default=None)

    @property
    def upstream_stage_names(self) -> list[str]:
        """Names of upstream stages of the same workflow, in ``depends_on`` order."""
        return [d for d in self.depends_on if isinstance(d, str)]

    @property
    def processor_names(self) -> set[str]:
        """Every processor name the stage defines (in its config and in ``output_processors``)."""
        names = {p.name for p in self.builder.get_processor_configs()}
        return names | {p.name for p in self.output_processors}


@checked_dataclass_init(_workflow_error)
@dataclass(frozen=True, eq=False)
class Workflow:
    """A named DAG of stages. Validated on construction; see :class:`WorkflowDefinitionError`."""

    name: str = spec_field(
        yaml=str,
        description="Workflow name (letters, digits and '_'): the asset group and the first part of every asset key.",
    )
    stages: Sequence[Stage] = spec_field(yaml=list[Any], schema={"minItems": 1})  # the YAML model: its StageModel
    max_num_records: int = spec_field(
        DEFAULT_MAX_NUM_RECORDS,
        yaml=StrictInt,
        description="Upper bound for num_records of every stage and run.",
        bounds=Bounds(minimum=1),
        what="a positive integer",
    )
    """Upper bound for ``num_records`` of every stage, in the spec and in run config (a guard against typos)."""
    execution: Literal["per_stage", "concurrent"] = spec_field(
        "per_stage",
        yaml=ExecutionMode,
        description="per_stage: one Dagster step per stage; concurrent: one step runs ready stages at the same time.",
        what="one of " + ", ".join(map(repr, EXECUTION_MODES)),
    )
    """``per_stage``: one Dagster step per stage. ``concurrent``: one step runs every selected stage, each as soon
    as its upstreams are published, at the same time on the shared ``DataDesigner``."""
    max_concurrent_stages: int | None = spec_field(
        None,
        yaml=StrictInt | None,
        description="In concurrent execution, at most this many stages at once.",
        bounds=Bounds(minimum=1),
        what="a positive integer or None",
    )
    """In ``concurrent`` execution, at most this many stages generate at once (default: no cap)."""
    automation_condition: dg.AutomationCondition | None = spec_field(
        None,
        yaml=AutomationModel | None,
        description="The automation of every stage that sets none. " + AUTOMATION_DESCRIPTION,
        convert=automation_value,
        key="automation",
    )
    """The automation condition of every stage that sets none of its own."""
    owners: Sequence[str] = spec_field((), yaml=list[str], description=OWNERS_DESCRIPTION + " Of every stage.")
    """Owners of every stage's asset (a stage's own owners follow them)."""
    tags: Mapping[str, str] = spec_field(
        default_factory=dict, yaml=dict[str, str], description=TAGS_DESCRIPTION + " Of every stage."
    )
    """Tags of every stage's asset (a stage's own tags win on the same key)."""
    # Filled in by validation: each stage's columns before any run (dd_assets.spec.column_flow.StageColumns).
    column_flow: dict[str, Any] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        for stage in self.stages:
            if not isinstance(stage, Stage):
                raise WorkflowDefinitionError(
                    f"expected Stage objects, got {type(stage).__name__}", workflow=self.name, field="stages"
                )
        check_workflow(self)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Workflow:
        """Load a workflow from a YAML file (see ``docs/yaml.md``)."""
        return read_workflow_yaml(path, workflow_type=cls, stage_type=Stage)

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"workflow {self.name!r} has no stage {name!r}")

    def topological_order(self) -> list[Stage]:
        """Stages in declared order, each after its upstream stages (depth first, upstreams in ``depends_on`` order).

        The order of ``dd-assets status`` and ``estimate`` rows and of the concurrent plan. The graph has no cycle:
        ``check_workflow`` refused one with ``graphlib.TopologicalSorter`` when the workflow was built.
        """
        by_name = {stage.name: stage for stage in self.stages}
        ordered: dict[str, Stage] = {}

        def visit(stage: Stage) -> None:
            if stage.name not in ordered:
                for upstream in stage.upstream_stage_names:
                    visit(by_name[upstream])
                ordered[stage.name] = stage

        for stage in self.stages:
            visit(stage)
        return list(ordered.values())


def stage_automation_condition(workflow: Workflow, stage: Stage) -> dg.AutomationCondition | None:
    """The stage's own automation condition, or else its workflow's."""
    return stage.automation_condition if stage.automation_condition is not None else workflow.automation_condition


def stage_owners(workflow: Workflow, stage: Stage) -> list[str]:
    """The workflow's owners, then the stage's own (each once)."""
    return list(dict.fromkeys([*workflow.owners, *stage.owners]))


def stage_tags(workflow: Workflow, stage: Stage) -> dict[str, str]:
    """The workflow's tags with the stage's own over them."""
    return {**workflow.tags, **stage.tags}
