"""The checks of one stage, run when its workflow is built: each names the workflow, the stage and the field.

A check may normalise the field it checks (``depends_on`` as a tuple, ``sampling_strategy`` as the enum) and fills
in what validation derives (``builder``, ``partitions_def``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg
from data_designer.config.base import ProcessorConfig
from data_designer.config.config_builder import DataDesignerConfigBuilder
from data_designer.config.seed import SamplingStrategy

from dd_assets.spec.definition_error import WorkflowDefinitionError
from dd_assets.spec.field_rules import check_num_records
from dd_assets.spec.field_specs import check_plain_values, field_specs
from dd_assets.spec.partition_keys import static_partition_keys
from dd_assets.spec.secrets import literal_credentials
from dd_assets.spec.stage_config import load_stage_config
from dd_assets.spec.stage_models import undeclared_model_aliases

if TYPE_CHECKING:
    from dd_assets.spec.workflow import Stage, Workflow


def check_stage(workflow: str, stage: Stage, *, stage_names: set[str], max_num_records: int) -> None:
    """Check every field of ``stage`` (``stage_names``: the stages of its workflow)."""

    def fail(message: str, field_name: str) -> None:
        raise WorkflowDefinitionError(message, workflow=workflow, stage=stage.name, field=field_name)

    check_plain_values(stage, fail)
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

    if stage.output.startswith("processor:"):
        wanted = stage.output.removeprefix("processor:")
        if wanted not in stage.processor_names:
            defined = ", ".join(sorted(stage.processor_names)) or "none"
            fail(f"no processor named {wanted!r} is defined (defined: {defined})", "output")

    try:
        object.__setattr__(stage, "sampling_strategy", SamplingStrategy(stage.sampling_strategy))
    except ValueError:
        fail(f"must be 'ordered' or 'shuffle', got {stage.sampling_strategy!r}", "sampling_strategy")

    if len(stage.depends_on) > 1 and stage.combine is None:
        fail(
            f"the stage has {len(stage.depends_on)} upstreams; set combine to 'concat', 'zip' or a callable",
            "combine",
        )
    _check_partitions(stage, builder, fail)
    check_asset_attributes(stage, fail)


def check_asset_attributes(owner: Stage | Workflow, fail: Callable[[str, str], None]) -> None:
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


def _check_partitions(stage: Stage, builder: DataDesignerConfigBuilder, fail: Callable[[str, str], None]) -> None:
    partitions, bounds = stage.partitions, field_specs(type(stage))["partitions"].bounds
    if partitions is None:
        return
    if isinstance(partitions, dg.PartitionsDefinition):
        object.__setattr__(stage, "partitions_def", partitions)
    elif isinstance(partitions, bool) or not isinstance(partitions, int):
        fail(
            f"must be an int of {bounds.minimum} or more or a dg.PartitionsDefinition, got {partitions!r}",
            "partitions",
        )
    elif partitions not in bounds:
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


def _literal_credentials_in(builder: DataDesignerConfigBuilder) -> list[str]:
    """Literal credentials where a stage config holds access settings: its seed source and model configs."""
    config = builder.get_builder_config().model_dump(mode="json")["data_designer"]
    return literal_credentials({key: config.get(key) for key in ("seed_config", "model_configs")})


def _tool_columns(builder: DataDesignerConfigBuilder) -> list[Any]:
    return [c for c in builder.get_column_configs() if getattr(c, "tool_alias", None)]
