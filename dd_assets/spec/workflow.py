"""Workflow and stage specs: what a user declares, validated when it is built.

A :class:`Workflow` is a named DAG of :class:`Stage` objects. Each stage is one
``DataDesigner.create()`` call; ``depends_on`` names other stages of the same
workflow or any Dagster asset by ``dg.AssetKey``. Every mistake is raised as a
:class:`WorkflowDefinitionError` that names the workflow, the stage and the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import dagster as dg
import yaml
from data_designer.config.base import ProcessorConfig
from data_designer.config.config_builder import BuilderConfig, DataDesignerConfigBuilder
from data_designer.config.data_designer_config import DataDesignerConfig
from data_designer.config.seed import IndexRange, PartitionBlock, SamplingStrategy

from dd_assets.spec import strict_yaml
from dd_assets.spec.default_models import default_model_configs
from dd_assets.spec.known_fields import checked_dataclass_init
from dd_assets.spec.secrets import literal_credentials
from dd_assets.spec.stage_models import undeclared_model_aliases

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from dd_assets.storage.dataset import StageDataset

STAGE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
WORKFLOW_NAME_PATTERN = re.compile(r"[A-Za-z0-9_]+")  # a Dagster group name: no '-'
MAX_NAME_LENGTH = 64
DEFAULT_MAX_NUM_RECORDS = 10_000_000
EXECUTION_MODES = ("per_stage", "concurrent")
MAX_STATIC_PARTITIONS = 10_000


@dataclass(frozen=True)
class Bounds:
    """The allowed range of a numeric field: checked here for Python, published as JSON Schema for YAML."""

    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return (
            (self.minimum is None or value >= self.minimum)
            and (self.exclusive_minimum is None or value > self.exclusive_minimum)
            and (self.maximum is None or value <= self.maximum)
        )

    def interval(self) -> str:
        """The range as an interval, such as ``(0, 1]``."""
        low = f"[{self.minimum}" if self.minimum is not None else f"({self.exclusive_minimum}"
        return f"{low}, {self.maximum}]" if self.maximum is not None else f"{low}, inf)"

    def json_schema(self) -> dict[str, float]:
        """The JSON Schema keywords of the range."""
        keywords = {"minimum": self.minimum, "exclusiveMinimum": self.exclusive_minimum, "maximum": self.maximum}
        return {key: value for key, value in keywords.items() if value is not None}


STAGE_BOUNDS: dict[str, Bounds] = {
    "num_records": Bounds(minimum=1),  # and at most the workflow's max_num_records
    "partitions": Bounds(minimum=2, maximum=MAX_STATIC_PARTITIONS),  # as a count of static partitions
    "completion_threshold": Bounds(exclusive_minimum=0, maximum=1),
    "token_budget": Bounds(minimum=1),
    "stall_timeout_s": Bounds(exclusive_minimum=0),
}
"""The ranges of :class:`Stage`'s numeric fields: the one place both the Python checks and the YAML schema read."""

WORKFLOW_BOUNDS: dict[str, Bounds] = {"max_num_records": Bounds(minimum=1), "max_concurrent_stages": Bounds(minimum=1)}
"""The ranges of :class:`Workflow`'s numeric fields."""

StageConfig = DataDesignerConfigBuilder | DataDesignerConfig | Mapping[str, Any] | str | Path
"""A builder, a built config, a dict, or a path to a YAML/JSON file in Data Designer's ``write_config`` format."""

CombineFn = Callable[[dict[str, "StageDataset"]], Union["pd.DataFrame", "pa.Table", str, Path]]
"""A join: gets every upstream as a :class:`StageDataset` keyed by upstream name, returns the combined seed."""

OnSuccessFn = Callable[[Path], Path | str]
"""Called with the stage's artifact directory after generation; returns the parquet file or directory to hand on."""


class WorkflowDefinitionError(ValueError):
    """A workflow or stage is declared wrongly. The message names the file, the workflow, the stage and the field."""

    def __init__(
        self,
        message: str,
        *,
        workflow: str | None = None,
        stage: str | None = None,
        field: str | None = None,
        file: str | None = None,
    ):
        self.reason, self.workflow, self.stage, self.field, self.file = message, workflow, stage, field, file
        where = []
        if file is not None:
            where.append(f"{file}:")
        if workflow is not None:
            where.append(f"workflow {workflow!r}")
        if stage is not None:
            where.append(f"stage {stage!r}")
        if field is not None:
            where.append(f"field {field!r}")
        head = ", ".join(w for w in where if not w.endswith(":"))
        prefix = f"{file}: " if file is not None else ""
        super().__init__(f"{prefix}{head}: {message}" if head else f"{prefix}{message}")

    def with_file(self, file: str) -> WorkflowDefinitionError:
        """The same error, naming the file it came from."""
        return WorkflowDefinitionError(
            self.reason, workflow=self.workflow, stage=self.stage, field=self.field, file=file
        )


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

    name: str
    config: StageConfig
    depends_on: Sequence[str | dg.AssetKey] = ()
    num_records: int | None = None
    output_processors: Sequence[ProcessorConfig] = ()
    output: str = "final"
    on_success: OnSuccessFn | None = None
    on_success_version: str | None = None
    allow_empty: bool = False
    sampling_strategy: SamplingStrategy | str = SamplingStrategy.ORDERED
    selection_strategy: IndexRange | PartitionBlock | None = None
    combine: Literal["concat", "zip"] | CombineFn | None = None
    description: str | None = None
    completion_threshold: float = 0.95
    min_judge_score: float | None = None
    partitions: int | dg.PartitionsDefinition | None = None
    token_budget: int | None = None
    stall_timeout_s: float | None = None
    automation_condition: dg.AutomationCondition | None = None
    owners: Sequence[str] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

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

    name: str
    stages: Sequence[Stage]
    max_num_records: int = DEFAULT_MAX_NUM_RECORDS
    """Upper bound for ``num_records`` of every stage, in the spec and in run config (a guard against typos)."""
    execution: Literal["per_stage", "concurrent"] = "per_stage"
    """``per_stage``: one Dagster step per stage. ``concurrent``: one step runs every selected stage, each as soon
    as its upstreams are published, at the same time on the shared ``DataDesigner``."""
    max_concurrent_stages: int | None = None
    """In ``concurrent`` execution, at most this many stages generate at once (default: no cap)."""
    automation_condition: dg.AutomationCondition | None = None
    """The automation condition of every stage that sets none of its own."""
    owners: Sequence[str] = ()
    """Owners of every stage's asset (a stage's own owners follow them)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags of every stage's asset (a stage's own tags win on the same key)."""
    # Filled in by validation: each stage's columns before any run (dd_assets.spec.column_flow.StageColumns).
    column_flow: dict[str, Any] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        _validate_workflow(self)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Workflow:
        """Load a workflow from a YAML file (see ``docs/yaml.md``)."""
        from dd_assets.spec.yaml_loader import load_workflow_yaml

        return load_workflow_yaml(path)

    def stage(self, name: str) -> Stage:
        """The stage called ``name``."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"workflow {self.name!r} has no stage {name!r}")

    def topological_order(self) -> list[Stage]:
        """Stages ordered so that every stage comes after its upstream stages."""
        by_name = {s.name: s for s in self.stages}
        ordered: list[Stage] = []
        seen: set[str] = set()

        def visit(stage: Stage) -> None:
            if stage.name in seen:
                return
            seen.add(stage.name)
            for upstream in stage.upstream_stage_names:
                visit(by_name[upstream])
            ordered.append(stage)

        for stage in self.stages:
            visit(stage)
        return ordered


def load_stage_config(config: StageConfig) -> DataDesignerConfigBuilder:
    """Turn any accepted ``Stage.config`` form into a fresh ``DataDesignerConfigBuilder``.

    A column that uses one of Data Designer's default model aliases without defining it gets the default
    model config (the user's ``~/.data-designer/model_configs.yaml``, else Data Designer's built-in ones; nothing is
    written there).
    """
    return _with_default_models(_load_builder(config))


def _with_default_models(builder: DataDesignerConfigBuilder) -> DataDesignerConfigBuilder:
    missing = undeclared_model_aliases(builder)
    if missing:
        defaults = {model.alias: model for model in default_model_configs()}
        for alias in missing:
            if alias in defaults:
                builder.add_model_config(defaults[alias])
    return builder


def _load_builder(config: StageConfig) -> DataDesignerConfigBuilder:
    if isinstance(config, DataDesignerConfigBuilder):
        return DataDesignerConfigBuilder.from_config(BuilderConfig(data_designer=config.build()))
    if isinstance(config, DataDesignerConfig):
        return DataDesignerConfigBuilder.from_config(BuilderConfig(data_designer=config.model_copy(deep=True)))
    if isinstance(config, Mapping):
        return _builder_from_mapping(config)
    if isinstance(config, (str, Path)):
        path = Path(config)
        if path.suffix not in {".yaml", ".yml", ".json"}:
            raise ValueError(f"config file {str(path)!r} must end in .yaml, .yml or .json")
        if not path.is_file():
            raise ValueError(f"config file {str(path)!r} does not exist or is not a file")
        try:
            data = strict_yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"config file {str(path)!r} cannot be read: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"config file {str(path)!r} does not hold a mapping")
        return _builder_from_mapping(resolve_seed_path(data, path.parent))
    raise TypeError(
        "expected a DataDesignerConfigBuilder, DataDesignerConfig, dict or config file path, "
        f"got {type(config).__name__}"
    )


def _builder_from_mapping(config: Mapping[str, Any]) -> DataDesignerConfigBuilder:
    """``DataDesignerConfigBuilder.from_config`` of a mapping, keeping the int keys of judge score options.

    Data Designer loads a mapping through JSON, where every key is a string: a judge's options ``{4: ..., 0: ...}``
    came back as ``{"4": ..., "0": ...}``, and the published scores as strings where the same config built in Python
    publishes ints. Options written as ints get their int keys back (quoted keys stay strings, as written).
    """
    builder = DataDesignerConfigBuilder.from_config(dict(config))
    body = config.get("data_designer", config)
    for column in (body.get("columns") or []) if isinstance(body, Mapping) else []:
        if not isinstance(column, Mapping) or not isinstance(column.get("scores"), list):
            continue
        loaded = getattr(builder.get_column_config(column.get("name")), "scores", None) or []
        for score, written in zip(loaded, column["scores"], strict=False):
            options = written.get("options") if isinstance(written, Mapping) else None
            if isinstance(options, Mapping):
                ints = {str(k): k for k in options if isinstance(k, int) and not isinstance(k, bool)}
                score.options = {ints.get(key, key): text for key, text in score.options.items()}
    return builder


def resolve_seed_path(config: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Make a relative local seed path in a config mapping relative to ``base_dir`` (the config file's folder).

    Data Designer resolves it against the working directory instead, which breaks as soon as a project is
    run from another folder.
    """
    body = config.get("data_designer", config)
    source = ((body or {}).get("seed_config") or {}).get("source") or {}
    path = source.get("path")
    if source.get("seed_type") == "local" and isinstance(path, str) and not Path(path).is_absolute():
        source["path"] = str((base_dir / path).resolve())
    return config


def _validate_name(value: object, label: str, *, workflow: str | None, stage: str | None) -> None:
    pattern, allowed = (
        (WORKFLOW_NAME_PATTERN, "letters, digits and '_'")
        if label == "workflow name"
        else (STAGE_NAME_PATTERN, "letters, digits, '_' and '-'")
    )
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise WorkflowDefinitionError(
            f"{label} {value!r} is invalid: use {allowed} only", workflow=workflow, stage=stage, field="name"
        )
    if len(value) > MAX_NAME_LENGTH:
        raise WorkflowDefinitionError(
            f"{label} {value!r} is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}",
            workflow=workflow,
            stage=stage,
            field="name",
        )


def stage_op_name(workflow: str, stage: str) -> str:
    """The Dagster op name of a stage: ``<workflow>__<stage>`` with ``-`` as ``_`` (ops allow no ``-``)."""
    return f"{workflow}__{stage}".replace("-", "_")


def static_partition_keys(count: int) -> list[str]:
    """``"0"``..``"count-1"``, zero-padded to equal width (so key order is also text order)."""
    width = len(str(count - 1))
    return [f"{index:0{width}d}" for index in range(count)]


def partition_share(total: int, index: int, count: int) -> int:
    """Partition ``index``'s share of ``total`` records split over ``count`` partitions (remainder goes first)."""
    return total // count + (1 if index < total % count else 0)


def check_num_records(value: object, *, maximum: int) -> str | None:
    """Why ``value`` is not a valid record count (a plain int in 1..maximum), or ``None`` when it is."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in STAGE_BOUNDS["num_records"]:
        return f"must be a positive integer, got {value!r}"
    if value > maximum:
        return f"{value:,} is above the workflow's max_num_records ({maximum:,}); raise max_num_records if you mean it"
    return None


def _validate_workflow(workflow: Workflow) -> None:
    _validate_name(workflow.name, "workflow name", workflow=None, stage=None)
    maximum = workflow.max_num_records
    if not isinstance(maximum, int) or maximum not in WORKFLOW_BOUNDS["max_num_records"]:
        raise WorkflowDefinitionError(
            f"must be a positive integer, got {maximum!r}", workflow=workflow.name, field="max_num_records"
        )
    if workflow.execution not in EXECUTION_MODES:
        raise WorkflowDefinitionError(
            f"must be one of {', '.join(map(repr, EXECUTION_MODES))}, got {workflow.execution!r}",
            workflow=workflow.name,
            field="execution",
        )
    cap = workflow.max_concurrent_stages
    if cap is not None and (not isinstance(cap, int) or cap not in WORKFLOW_BOUNDS["max_concurrent_stages"]):
        raise WorkflowDefinitionError(
            f"must be a positive integer or None, got {cap!r}", workflow=workflow.name, field="max_concurrent_stages"
        )
    _validate_asset_attributes(workflow, lambda message, name: _raise(message, workflow.name, None, name))
    if not workflow.stages:
        raise WorkflowDefinitionError("a workflow needs at least one stage", workflow=workflow.name, field="stages")
    seen: set[str] = set()
    op_names: dict[str, str] = {}
    for stage in workflow.stages:
        if not isinstance(stage, Stage):
            raise WorkflowDefinitionError(
                f"expected Stage objects, got {type(stage).__name__}", workflow=workflow.name, field="stages"
            )
        _validate_name(stage.name, "stage name", workflow=workflow.name, stage=None)
        if stage.name in seen:
            raise WorkflowDefinitionError(
                "duplicate stage name", workflow=workflow.name, stage=stage.name, field="name"
            )
        seen.add(stage.name)
        op_name = stage_op_name(workflow.name, stage.name)
        if op_name in op_names:
            raise WorkflowDefinitionError(
                f"stages {op_names[op_name]!r} and {stage.name!r} both become the Dagster op {op_name!r} "
                "('-' turns into '_'); rename one",
                workflow=workflow.name,
                stage=stage.name,
                field="name",
            )
        op_names[op_name] = stage.name
    for stage in workflow.stages:
        _validate_stage(workflow.name, stage, stage_names=seen, max_num_records=maximum)
    _check_cycles(workflow)
    _check_partitioned_upstreams(workflow)

    from dd_assets.spec.column_flow import workflow_column_flow
    from dd_assets.spec.validation import check_column_flow, check_model_aliases

    check_model_aliases([workflow])
    flow = workflow_column_flow(workflow)
    check_column_flow(workflow, flow)
    object.__setattr__(workflow, "column_flow", flow)


def _validate_stage(workflow: str, stage: Stage, *, stage_names: set[str], max_num_records: int) -> None:
    def fail(message: str, field_name: str) -> None:
        raise WorkflowDefinitionError(message, workflow=workflow, stage=stage.name, field=field_name)

    try:
        builder = load_stage_config(stage.config)
        builder.build()
    except Exception as exc:  # Data Designer raises pydantic, value and file errors here
        fail(f"invalid Data Designer config: {exc}", "config")
    object.__setattr__(stage, "builder", builder)
    found = _literal_credentials_in(builder)
    if found:
        fail(
            f"{'; '.join(found)}: a credential in a stage config would be stored in Dagster (code version, "
            "metadata) and in the stage's artifacts (the value is not repeated here); name an environment variable "
            "instead (a seed source's token: 'HF_TOKEN'), which Data Designer reads where the stage runs",
            "config",
        )
    for alias in undeclared_model_aliases(builder):
        users = [c.name for c in builder.get_column_configs() if alias in c.get_model_aliases()]
        fail(
            f"column {users[0]!r} uses model alias {alias!r}, which neither the stage config's model_configs nor "
            "Data Designer's default models define",
            "config",
        )
    tool_columns = [f"{c.name!r} (tool_alias {c.tool_alias!r})" for c in _tool_columns(builder)]
    if tool_columns or builder.tool_configs:
        what = f"column {', '.join(tool_columns)}" if tool_columns else "tool_configs"
        fail(
            f"{what} use MCP tool calling, which dd_assets does not support yet: every stage shares one model "
            "registry, built without MCP providers. Remove the tool, or run this config with Data Designer "
            "directly",
            "config",
        )

    depends_on = stage.depends_on
    if isinstance(depends_on, (str, dg.AssetKey)):
        depends_on = [depends_on]
    object.__setattr__(stage, "depends_on", tuple(depends_on))
    seen_deps: set[object] = set()
    for dep in stage.depends_on:
        if isinstance(dep, str):
            if dep == stage.name:
                fail("a stage cannot depend on itself", "depends_on")
            if dep not in stage_names:
                known = ", ".join(sorted(stage_names - {stage.name})) or "none"
                fail(f"unknown upstream stage {dep!r} (stages of this workflow: {known})", "depends_on")
        elif not isinstance(dep, dg.AssetKey):
            fail(f"entries must be stage names or dg.AssetKey, got {type(dep).__name__}", "depends_on")
        if dep in seen_deps:
            fail(f"upstream {dep!r} is listed twice", "depends_on")
        seen_deps.add(dep)

    if stage.num_records is not None:
        problem = check_num_records(stage.num_records, maximum=max_num_records)
        if problem:
            fail(problem, "num_records")

    processors = tuple(stage.output_processors or ())
    for processor in processors:
        if not isinstance(processor, ProcessorConfig):
            fail(
                f"entries must be Data Designer processor configs, got {type(processor).__name__}", "output_processors"
            )
    object.__setattr__(stage, "output_processors", processors)
    names = [p.name for p in processors]
    if len(names) != len(set(names)):
        fail("processor names must be distinct", "output_processors")
    clash = set(names) & {p.name for p in builder.get_processor_configs()}
    if clash:
        fail(f"names {sorted(clash)} are already used by processors in the stage config", "output_processors")

    if not isinstance(stage.output, str) or not (stage.output == "final" or stage.output.startswith("processor:")):
        fail(f"must be 'final' or 'processor:<name>', got {stage.output!r}", "output")
    if stage.output.startswith("processor:"):
        wanted = stage.output.removeprefix("processor:")
        if wanted not in stage.processor_names:
            defined = ", ".join(sorted(stage.processor_names)) or "none"
            fail(f"no processor named {wanted!r} is defined (defined: {defined})", "output")

    if stage.on_success is not None and not callable(stage.on_success):
        fail("must be callable", "on_success")
    if stage.on_success_version is not None and not isinstance(stage.on_success_version, str):
        fail("must be a string", "on_success_version")
    if not isinstance(stage.allow_empty, bool):
        fail("must be a boolean", "allow_empty")
    try:
        object.__setattr__(stage, "sampling_strategy", SamplingStrategy(stage.sampling_strategy))
    except ValueError:
        fail(f"must be 'ordered' or 'shuffle', got {stage.sampling_strategy!r}", "sampling_strategy")
    if stage.selection_strategy is not None and not isinstance(stage.selection_strategy, (IndexRange, PartitionBlock)):
        fail("must be an IndexRange or a PartitionBlock", "selection_strategy")

    if stage.combine is not None and stage.combine not in ("concat", "zip") and not callable(stage.combine):
        fail(f"must be 'concat', 'zip' or a callable, got {stage.combine!r}", "combine")
    if len(stage.depends_on) > 1 and stage.combine is None:
        fail(
            f"the stage has {len(stage.depends_on)} upstreams; set combine to 'concat', 'zip' or a callable",
            "combine",
        )
    if stage.description is not None and not isinstance(stage.description, str):
        fail("must be a string", "description")
    threshold, bounds = stage.completion_threshold, STAGE_BOUNDS["completion_threshold"]
    if threshold not in bounds:
        fail(f"must be a number in {bounds.interval()}, got {threshold!r}", "completion_threshold")
    if stage.min_judge_score is not None and (
        isinstance(stage.min_judge_score, bool) or not isinstance(stage.min_judge_score, (int, float))
    ):
        fail(f"must be a number, got {stage.min_judge_score!r}", "min_judge_score")
    problem = check_token_budget(stage.token_budget)
    if problem:
        fail(problem, "token_budget")
    timeout, bounds = stage.stall_timeout_s, STAGE_BOUNDS["stall_timeout_s"]
    if timeout is not None and timeout not in bounds:
        fail(f"must be a number of seconds > {bounds.exclusive_minimum}, got {timeout!r}", "stall_timeout_s")
    _validate_partitions(stage, builder, fail)
    _validate_asset_attributes(stage, fail)


def _raise(message: str, workflow: str, stage: str | None, field_name: str) -> None:
    raise WorkflowDefinitionError(message, workflow=workflow, stage=stage, field=field_name)


def _validate_asset_attributes(owner: Stage | Workflow, fail: Callable[[str, str], None]) -> None:
    """``automation_condition``, ``owners`` and ``tags`` of a stage or workflow, as Dagster will take them."""
    condition = owner.automation_condition
    if condition is not None and not isinstance(condition, dg.AutomationCondition):
        fail(f"must be a dg.AutomationCondition or None, got {type(condition).__name__}", "automation_condition")
    owners = owner.owners
    if isinstance(owners, str) or not isinstance(owners, Sequence) or not all(isinstance(o, str) for o in owners):
        fail(f"must be a list of strings ('team:...' or an email), got {owners!r}", "owners")
    tags = owner.tags
    if not isinstance(tags, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        fail(f"must be a mapping of strings to strings, got {tags!r}", "tags")
    object.__setattr__(owner, "owners", tuple(owners))
    object.__setattr__(owner, "tags", dict(tags))
    for field_name, value in (("owners", {"owners": list(owners)}), ("tags", {"tags": dict(tags)})):
        try:  # Dagster's own rules for owners and tag keys/values
            dg.AssetSpec(key="dd_assets_check", **value)
        except Exception as exc:  # noqa: BLE001 - Dagster raises definition and check errors here
            reason = str(exc).replace(" for asset 'AssetKey(['dd_assets_check'])'", "")
            fail(reason, field_name)


def stage_automation_condition(workflow: Workflow, stage: Stage) -> dg.AutomationCondition | None:
    """The stage's own automation condition, or else its workflow's."""
    return stage.automation_condition if stage.automation_condition is not None else workflow.automation_condition


def stage_owners(workflow: Workflow, stage: Stage) -> list[str]:
    """The workflow's owners, then the stage's own (each once)."""
    return list(dict.fromkeys([*workflow.owners, *stage.owners]))


def stage_tags(workflow: Workflow, stage: Stage) -> dict[str, str]:
    """The workflow's tags with the stage's own over them."""
    return {**workflow.tags, **stage.tags}


def check_token_budget(budget: object) -> str | None:
    """What is wrong with a ``token_budget`` (``None`` when it is fine or unset)."""
    if budget is None:
        return None
    bounds = STAGE_BOUNDS["token_budget"]
    if not isinstance(budget, int) or budget not in bounds:
        return f"must be a whole number of tokens >= {bounds.minimum}, got {budget!r}"
    return None


def _validate_partitions(stage: Stage, builder: DataDesignerConfigBuilder, fail: Callable[[str, str], None]) -> None:
    partitions = stage.partitions
    if partitions is None:
        return
    if isinstance(partitions, dg.PartitionsDefinition):
        object.__setattr__(stage, "partitions_def", partitions)
    elif isinstance(partitions, bool) or not isinstance(partitions, int):
        fail(
            f"must be an int of {STAGE_BOUNDS['partitions'].minimum} or more or a dg.PartitionsDefinition, "
            f"got {partitions!r}",
            "partitions",
        )
    elif partitions not in (bounds := STAGE_BOUNDS["partitions"]):
        fail(f"must be between {bounds.minimum} and {bounds.maximum:,}, got {partitions}", "partitions")
    else:
        object.__setattr__(stage, "partitions_def", dg.StaticPartitionsDefinition(static_partition_keys(partitions)))
    if stage.selection_strategy is not None:
        fail(
            "a partitioned stage takes its own block of the seed in each partition; remove selection_strategy "
            "(or remove partitions)",
            "selection_strategy",
        )
    own_seed = builder.get_seed_config()
    if not stage.depends_on and own_seed is not None and own_seed.selection_strategy is not None:
        fail(
            "a partitioned stage takes its own block of the config's seed in each partition; remove the seed's "
            "selection_strategy from the config (or remove partitions)",
            "partitions",
        )


def _check_partitioned_upstreams(workflow: Workflow) -> None:
    """A partitioned stage's upstream stages are all partitioned like it, or none is; no concurrent execution."""
    by_name = {s.name: s for s in workflow.stages}
    for stage in workflow.stages:
        if stage.partitions_def is None:
            continue
        if workflow.execution == "concurrent":
            raise WorkflowDefinitionError(
                "partitioned stages run one partition per Dagster step; use execution 'per_stage' for this workflow",
                workflow=workflow.name,
                stage=stage.name,
                field="partitions",
            )
        if isinstance(stage.partitions, int) and stage.num_records is not None and stage.num_records < stage.partitions:
            raise WorkflowDefinitionError(
                f"num_records {stage.num_records} is split over {stage.partitions} partitions, which leaves some "
                "partitions no records",
                workflow=workflow.name,
                stage=stage.name,
                field="num_records",
            )
        upstreams = [by_name[name] for name in stage.upstream_stage_names]
        alike = [u.name for u in upstreams if u.partitions_def == stage.partitions_def]
        if alike and len(alike) != len(stage.depends_on):
            others = [upstream_name(d) for d in stage.depends_on if d not in alike]
            raise WorkflowDefinitionError(
                f"upstreams {alike} are partitioned like this stage (partition k reads their partition k) but "
                f"{others} are not; partition the upstreams alike, or none of them (then each partition takes its "
                "block of the combined seed)",
                workflow=workflow.name,
                stage=stage.name,
                field="depends_on",
            )


def _literal_credentials_in(builder: DataDesignerConfigBuilder) -> list[str]:
    """Literal credentials where a stage config holds access settings: its seed source and model configs."""
    config = builder.get_builder_config().model_dump(mode="json")["data_designer"]
    return literal_credentials({key: config.get(key) for key in ("seed_config", "model_configs")})


def upstream_name(dep: str | dg.AssetKey) -> str:
    """A stage name, or an asset key as ``a/b``."""
    return dep if isinstance(dep, str) else dep.to_user_string()


def _tool_columns(builder: DataDesignerConfigBuilder) -> list[Any]:
    return [c for c in builder.get_column_configs() if getattr(c, "tool_alias", None)]


def _check_cycles(workflow: Workflow) -> None:
    by_name = {s.name: s for s in workflow.stages}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for upstream in by_name[name].upstream_stage_names:
            if state.get(upstream) == 1:
                cycle = path[path.index(upstream) :] + [upstream]
                raise WorkflowDefinitionError(
                    "dependency cycle: " + " -> ".join(reversed(cycle)),
                    workflow=workflow.name,
                    stage=upstream,
                    field="depends_on",
                )
            if state.get(upstream) is None:
                visit(upstream)
        path.pop()
        state[name] = 2

    for stage in workflow.stages:
        if state.get(stage.name) is None:
            visit(stage.name)
