"""What one stage run works on: the stage and its partition, this run's settings, and how its failures read."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg
from data_designer.config.seed import IndexRange, PartitionBlock

from dd_assets.engine.resource import DataDesignerResource
from dd_assets.engine.stage_context import StageContext
from dd_assets.spec.secrets import redact
from dd_assets.spec.workflow import Stage, Workflow
from dd_assets.storage.io_manager import StageParquetIOManager
from dd_assets.storage.layout import describe


class StageRunConfig(dg.Config):
    """Per-materialization settings of a stage (launchpad / ``--config``).

    Attributes:
        num_records: records to generate this run; overrides ``Stage.num_records`` and the seed size.
        output_override: a parquet file or directory that replaces the stage's output; the stage makes
            no model call (like Data Designer's ``stage_output_overrides``, without generating first).
        token_budget: tokens this stage may use; overrides ``Stage.token_budget`` for this run.
    """

    num_records: int | None = None
    output_override: str | None = None
    token_budget: int | None = None


class StageFailure(dg.Failure):
    """A stage cannot run; the message names the workflow and the stage."""


@dataclass
class StageScope:
    """The stage (and partition) one materialization runs, with what it runs on, and its stop signal."""

    context: dg.AssetExecutionContext
    workflow: Workflow
    stage: Stage
    config: StageRunConfig
    code_version: str
    resource: DataDesignerResource
    io_manager: StageParquetIOManager
    upstream_keys: dict[str | dg.AssetKey, dg.AssetKey]
    asset_key: dg.AssetKey
    output_name: str
    interrupted: str | None = field(default=None, init=False)  # why another thread stopped this run

    def __post_init__(self) -> None:
        self.partition: str | None = None
        self.partition_index, self.partition_count = 0, 1
        if self.stage.partitions_def is not None:
            self.partition = self.context.partition_key
            keys = list(self.stage.partitions_def.get_partition_keys(dynamic_partitions_store=self.context.instance))
            if self.partition not in keys:
                raise self.fail(f"partition {self.partition!r} is not one of the stage's partitions")
            self.partition_index, self.partition_count = keys.index(self.partition), len(keys)
        label = f"{self.workflow.name}/{self.stage.name}"
        self.stage_context = StageContext(label=f"{label}[{self.partition}]" if self.partition is not None else label)

    @property
    def where(self) -> str:
        return describe(self.workflow.name, self.stage.name, self.partition)

    @property
    def partition_block(self) -> PartitionBlock | None:
        """For a partition that splits its seed (a root seed file, or upstreams not partitioned like it): its block."""
        if self.partition is None:
            return None
        upstream_partitions = [self.upstream_partitions_def(dep) for dep in self.stage.depends_on]
        if upstream_partitions and all(p == self.stage.partitions_def for p in upstream_partitions):
            return None  # partition k reads upstream partition k
        return PartitionBlock(index=self.partition_index, num_partitions=self.partition_count)

    def upstream_partitions_def(self, dep: str | dg.AssetKey) -> dg.PartitionsDefinition | None:
        """An upstream's partitions: a stage's own, or those of any other asset as this job knows it."""
        if isinstance(dep, str):
            return self.workflow.stage(dep).partitions_def
        return self.context.job_def.asset_layer.get(self.upstream_keys[dep]).partitions_def

    @property
    def selection_strategy(self) -> IndexRange | PartitionBlock | None:
        """The seed selection this run uses: the stage's, or this partition's block."""
        return self.partition_block or self.stage.selection_strategy

    @property
    def secrets(self) -> list[str]:
        return self.resource.secret_values() + self.io_manager.secret_values()

    def fail(self, message: str) -> StageFailure:
        return StageFailure(description=redact(f"{self.where}: {message}", self.secrets))

    def interrupt(self, reason: str) -> None:
        """Stop this stage from another thread: no further model request, Data Designer's run cancelled, finished
        batches kept (a stage not yet generating stops before its first request)."""
        self.interrupted = reason
        guard = self.stage_context.guard
        if guard is not None:
            guard.stop(f"stopped: {reason}")
