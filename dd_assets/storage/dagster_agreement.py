"""Keeping Dagster's record and a stage's storage in agreement after a run dies while writing the stage.

A run holds the stage's lock until Dagster has recorded its materialization, so normally the two change together.
A run killed between its commit (``stage.json``) and Dagster's record leaves storage ahead of Dagster;
:func:`reconcile`, called by the next run of the stage and (through :func:`reconcile_if_idle`) by readers,
records the committed version in Dagster and marks a run whose own process died holding the lock as failed.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import dagster as dg

from dd_assets.storage.layout import STAGE_RECORD, describe
from dd_assets.storage.records import StageRecordUnreadableError
from dd_assets.storage.stage_lock import StageBusyError, StageLock, process_is_gone

if TYPE_CHECKING:
    from dd_assets.storage.stage_store import StageStore

VERSION_METADATA_KEY = "dd_assets/version"
"""The materialization metadata naming the stored version a materialization records."""


def reconcile(
    store: StageStore,
    workflow: str,
    stage: str,
    asset_key: dg.AssetKey,
    instance: dg.DagsterInstance,
    lock: StageLock | None = None,
    partition: str | None = None,
) -> str | None:
    """Make Dagster agree with storage after a run died while writing the stage.

    Call it holding the stage's ``lock``. First, when the lock shows that a run's processes died holding it
    (on this machine), that run, still shown as started, is marked failed. A local ``data`` link left on an older
    version than the commit (a run died between the two) is pointed at the committed version. Then, when the
    committed ``stage.json`` was written by a run this instance knows that ended without success, and Dagster never
    recorded that version (the run died between the commit and Dagster's record of it), the version is recorded
    now: a runless materialization carrying the stored metadata. Returns a message when it did anything.
    ``partition`` names one partition of a partitioned stage.
    """
    where = describe(workflow, stage, partition)
    messages = []
    dead_run = _run_that_died_holding(store, instance, lock) if lock is not None else None
    if dead_run is not None:
        instance.report_run_failed(dead_run, f"{where}: the run's process died while writing the stage")
        messages.append(f"marked run {dead_run.run_id} failed: its process died while writing the stage")
    record = store.read_record(workflow, stage, partition)
    repaired = store.repair_data_link(workflow, stage, partition, record)
    if repaired:
        messages.append(repaired)
    run = instance.get_run_by_id(record["run_id"]) if record and record.get("run_id") else None
    if (
        run is not None
        and record.get("version")
        and run.is_finished
        and run.status != dg.DagsterRunStatus.SUCCESS  # a successful run recorded its output (even if wiped since)
        and not _dagster_recorded(instance, asset_key, run.run_id, record["version"], partition)
    ):
        instance.report_runless_asset_event(recovered_materialization(asset_key, record, partition))
        messages.append(
            f"{where}: version {record['version']} was committed by run "
            f"{record['run_id']}, which ended before Dagster recorded it; recorded it now so Dagster and storage "
            "agree"
        )
    return "; ".join(messages) or None


def _run_that_died_holding(store: StageStore, instance: dg.DagsterInstance, lock: StageLock) -> Any:
    """The run, still shown as started, whose processes died while one of them held ``lock``.

    Certain only on one machine: the lock file names a writer on this host that never released it, and both
    that process and the run's own process (the same one under the in-process executor) are gone. Under the
    multiprocess executor a live run process fails its own run when a step process dies.
    """
    owner = lock.previous_owner
    if not store.is_local or not isinstance(owner.get("run"), str) or owner.get("host") != socket.gethostname():
        return None
    run = instance.get_run_by_id(owner["run"])
    if run is None or run.status not in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED):
        return None
    starts = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_START).records
    run_pid = starts[0].event_log_entry.dagster_event.pid if starts else None
    return run if process_is_gone(owner.get("pid")) and process_is_gone(run_pid) else None


def reconcile_if_idle(
    store: StageStore,
    workflow: str,
    stage: str,
    asset_key: dg.AssetKey,
    instance: dg.DagsterInstance,
    log: Any,
    partition: str | None = None,
) -> None:
    """:func:`reconcile`, when no run is writing the stage right now (a reader never waits for a writer, and a
    writer arriving meanwhile waits the few milliseconds this takes)."""
    try:
        if not (store.stage_dir(workflow, stage, partition) / STAGE_RECORD).exists():
            return  # nothing published: nothing to reconcile, and a reader creates no folders
    except OSError:
        return
    lock = store.stage_lock(workflow, stage, run_id="reader", reader=True, partition=partition)
    try:
        lock.acquire()
    except (StageBusyError, OSError):
        return
    try:
        message = reconcile(store, workflow, stage, asset_key, instance, lock, partition)
        if message:
            log.warning(message)
    except StageRecordUnreadableError:
        pass  # the read that follows reports it
    finally:
        lock.release()


def _dagster_recorded(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, run_id: str, version: str, partition: str | None = None
) -> bool:
    """Whether Dagster holds a materialization of ``version``: in the run's own events, or recorded since."""
    run_events = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    materializations = [r.event_log_entry.asset_materialization for r in run_events]
    records_filter = (
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]) if partition else asset_key
    )
    materializations += [
        r.asset_materialization for r in instance.fetch_materializations(records_filter, limit=25).records
    ]
    for materialization in materializations:
        if materialization is None or materialization.asset_key != asset_key or materialization.partition != partition:
            continue
        value = materialization.metadata.get(VERSION_METADATA_KEY)
        if value is not None and value.value == version:
            return True
    return False


def recovered_materialization(
    asset_key: dg.AssetKey, record: dict[str, Any], partition: str | None = None
) -> dg.AssetMaterialization:
    """The materialization of a committed version whose run died before Dagster recorded it."""
    from dagster._core.definitions.data_version import CODE_VERSION_TAG, DATA_VERSION_TAG

    tags = {}
    if record.get("data_version"):
        tags[DATA_VERSION_TAG] = record["data_version"]
    if record.get("code_version"):
        tags[CODE_VERSION_TAG] = record["code_version"]
    return dg.AssetMaterialization(
        asset_key=asset_key,
        partition=partition,
        description=f"Recovered: committed by run {record['run_id']}, which ended before Dagster recorded it.",
        metadata={
            VERSION_METADATA_KEY: dg.MetadataValue.text(record["version"]),
            "dagster/row_count": dg.MetadataValue.int(int(record.get("output_rows") or 0)),
            "dd_assets/status": dg.MetadataValue.text(str(record.get("status"))),
            "dd_assets/recovered_from_run": dg.MetadataValue.text(record["run_id"]),
            **model_usage_metadata(record.get("model_usage")),
        },
        tags=tags,
    )


def model_usage_metadata(model_usage: dict[str, Any] | None) -> dict[str, Any]:
    """``dd_assets/model_usage`` for a stage that used a model; nothing for one that used none."""
    return {"dd_assets/model_usage": dg.MetadataValue.json(model_usage)} if model_usage else {}
