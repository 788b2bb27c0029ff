"""``dd-assets status``: every stage of a code location, its published status, rows, last run, stale or not."""

from __future__ import annotations

from typing import Any

from dd_assets.spec.workflow import Stage, Workflow
from dd_assets.storage.io_manager import StageParquetIOManager
from dd_assets.storage.records import StageStorageError
from dd_assets.tools.code_location import CodeLocation


def status_rows(location: CodeLocation) -> list[dict[str, Any]]:
    """One row per stage (and per published partition): status, rows, last materialization, stale or not.

    Stale means what Dagster's UI calls Unsynced: the definition's code version is not the one published, or a
    direct upstream stage's current data version is not the one the output was built from."""
    io_manager = location.io_manager
    rows = []
    for workflow in location.workflows.values():
        for stage in workflow.topological_order():
            spec = location.specs.get((workflow.name, stage.name))
            code_version = spec.code_version if spec is not None else None
            partitions = (
                [None] if stage.partitions_def is None else io_manager.stored_partitions(workflow.name, stage.name)
            )
            if not partitions:
                partitions = [None]
            for partition in partitions:
                try:
                    record = io_manager.read_record(workflow.name, stage.name, partition)
                except StageStorageError as exc:
                    record = {"status": f"unreadable: {exc}"}
                name = f"{workflow.name}/{stage.name}" + (f"[{partition}]" if partition is not None else "")
                if record is None:
                    rows.append(
                        {"stage": name, "status": "never materialized", "rows": "", "materialized_at": "", "code": ""}
                    )
                    continue
                changed = _changed_upstreams(io_manager, workflow, stage, partition, record)
                if record.get("code_version") != code_version:
                    sync = "STALE (definition changed)"
                elif changed:
                    sync = f"STALE (upstream {', '.join(changed)} changed)"
                else:
                    sync = "current"
                rows.append(
                    {
                        "stage": name,
                        "status": str(record.get("status")),
                        "rows": str(record.get("output_rows", "")),
                        "materialized_at": str(record.get("materialized_at", ""))[:19],
                        "code": sync,
                    }
                )
    return rows


def _changed_upstreams(
    io_manager: StageParquetIOManager, workflow: Workflow, stage: Stage, partition: str | None, record: dict
) -> list[str]:
    """The upstream stages whose current output is not the version ``record`` was built from (external assets are
    Dagster's to tell). An upstream read as a run would read it: its same partition, else all of it."""
    from dd_assets.run.stage_inputs import data_version_of

    changed = []
    names = {s.name for s in workflow.stages}
    for dep, used in (record.get("upstream") or {}).items():
        if dep not in names or not isinstance(used, dict):
            continue
        upstream = workflow.stage(dep)
        same_partition = partition is not None and upstream.partitions_def == stage.partitions_def
        try:
            dataset = io_manager.read_stage(
                workflow.name, dep, partition if same_partition else None, partitions_def=upstream.partitions_def
            )
            current = data_version_of(dataset)
        except StageStorageError:
            current = None  # the upstream's output is gone or unreadable: not what this output was built from
        if current != used.get("data_version"):
            changed.append(dep)
    return changed
