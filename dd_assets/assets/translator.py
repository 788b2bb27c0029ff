"""DataDesignerStageTranslator: how a stage becomes an ``AssetSpec`` (the dagster-dbt translator pattern).

Override a ``get_*`` method to change one field; :meth:`get_asset_spec` assembles them.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from dd_assets.run.checks import check_specs
from dd_assets.spec.column_schema import stage_column_schema
from dd_assets.spec.versioning import stage_code_version
from dd_assets.spec.workflow import Stage, Workflow, stage_automation_condition, stage_owners, stage_tags

IO_MANAGER_KEY = "dd_stage_io_manager"
RESOURCE_KEY = "data_designer"
KINDS = {"data_designer", "parquet"}


class DataDesignerStageTranslator:
    """Builds the ``AssetSpec`` of each stage. Subclass it to change keys, groups, metadata, ..."""

    def get_asset_key(self, workflow: Workflow, stage: Stage) -> dg.AssetKey:
        """``[workflow, stage]``."""
        return dg.AssetKey([workflow.name, stage.name])

    def get_upstream_key(self, workflow: Workflow, dep: str | dg.AssetKey) -> dg.AssetKey:
        """The asset key of an upstream: a stage name goes through :meth:`get_asset_key`."""
        if isinstance(dep, dg.AssetKey):
            return dep
        return self.get_asset_key(workflow, workflow.stage(dep))

    def get_group_name(self, workflow: Workflow, stage: Stage) -> str:
        """The workflow name."""
        return workflow.name

    def get_description(self, workflow: Workflow, stage: Stage) -> str:
        """The stage's description, or a summary of its columns."""
        if stage.description:
            return stage.description
        columns = [c.name for c in stage.builder.get_column_configs()]
        return f"Data Designer stage {stage.name!r} of workflow {workflow.name!r}; generates: {', '.join(columns)}"

    def get_kinds(self, workflow: Workflow, stage: Stage) -> set[str]:
        """``{"data_designer", "parquet"}``."""
        return set(KINDS)

    def get_code_version(self, workflow: Workflow, stage: Stage) -> str:
        """A hash of the stage spec alone (see :mod:`dd_assets.spec.versioning`)."""
        return stage_code_version(stage)

    def get_metadata(self, workflow: Workflow, stage: Stage) -> dict[str, Any]:
        """Definition metadata shown in the catalog."""
        columns = stage.builder.get_column_configs()
        schema = stage_column_schema(workflow, stage)
        return {
            **({"dagster/column_schema": dg.MetadataValue.table_schema(schema)} if schema is not None else {}),
            "dd_assets/workflow": workflow.name,
            "dd_assets/stage": stage.name,
            "dd_assets/columns": dg.MetadataValue.json({c.name: str(c.column_type) for c in columns}),
            "dd_assets/num_records": stage.num_records if stage.num_records is not None else "from seed",
            "dd_assets/output": stage.output,
        }

    def get_tags(self, workflow: Workflow, stage: Stage) -> dict[str, str]:
        """Asset tags: the workflow's ``tags`` with the stage's own over them."""
        return stage_tags(workflow, stage)

    def get_owners(self, workflow: Workflow, stage: Stage) -> list[str]:
        """Asset owners: the workflow's ``owners``, then the stage's own."""
        return stage_owners(workflow, stage)

    def get_automation_condition(self, workflow: Workflow, stage: Stage) -> dg.AutomationCondition | None:
        """The stage's ``automation_condition``, or else the workflow's (none by default)."""
        return stage_automation_condition(workflow, stage)

    def get_pool(self, workflow: Workflow, stage: Stage) -> str | None:
        """The Dagster concurrency pool of the stage's op (none by default); caps model traffic across runs."""
        return None

    def get_partitions_def(self, workflow: Workflow, stage: Stage) -> dg.PartitionsDefinition | None:
        """The stage's partitions (from ``Stage.partitions``), or ``None``."""
        return stage.partitions_def

    def get_partition_mapping(
        self, workflow: Workflow, stage: Stage, dep: str | dg.AssetKey
    ) -> dg.PartitionMapping | None:
        """How a partitioned stage reads a partitioned upstream stage: every upstream partition when they are
        partitioned differently (each partition then takes its block of them all); Dagster's default otherwise
        (partition k reads partition k when alike; an unpartitioned stage reads every partition)."""
        if stage.partitions_def is None or not isinstance(dep, str):
            return None
        upstream = workflow.stage(dep).partitions_def
        if upstream is not None and upstream != stage.partitions_def:
            return dg.AllPartitionMapping()
        return None

    def get_check_specs(self, workflow: Workflow, stage: Stage) -> list[dg.AssetCheckSpec]:
        """The asset checks of a stage (see :mod:`dd_assets.run.checks`)."""
        return check_specs(self.get_asset_key(workflow, stage), stage)

    def get_asset_spec(self, workflow: Workflow, stage: Stage) -> dg.AssetSpec:
        """The whole ``AssetSpec`` of a stage, stored by the ``dd_stage_io_manager``."""
        return dg.AssetSpec(
            key=self.get_asset_key(workflow, stage),
            deps=[
                dg.AssetDep(
                    self.get_upstream_key(workflow, dep),
                    partition_mapping=self.get_partition_mapping(workflow, stage, dep),
                )
                for dep in stage.depends_on
            ],
            description=self.get_description(workflow, stage),
            group_name=self.get_group_name(workflow, stage),
            kinds=self.get_kinds(workflow, stage),
            code_version=self.get_code_version(workflow, stage),
            # the IO manager finds a stage's storage by these two keys, whatever the asset key is
            metadata={
                **self.get_metadata(workflow, stage),
                "dd_assets/workflow": workflow.name,
                "dd_assets/stage": stage.name,
            },
            tags=self.get_tags(workflow, stage),
            owners=self.get_owners(workflow, stage),
            automation_condition=self.get_automation_condition(workflow, stage),
            partitions_def=self.get_partitions_def(workflow, stage),
        ).with_io_manager_key(IO_MANAGER_KEY)
