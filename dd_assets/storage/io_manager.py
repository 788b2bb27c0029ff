"""StageParquetIOManager: the Dagster IO manager over the stage store (each stage's parquet, published atomically).

The layout on disk and object stores is :mod:`dd_assets.storage.layout`'s, the records, reads and the publish
protocol are :class:`~dd_assets.storage.stage_store.StageStore`'s; this module holds the configuration Dagster sees
(checked for credentials) and the IO manager hooks. If a run dies between the commit and Dagster recording the
materialization, storage is ahead of Dagster; :func:`~dd_assets.storage.dagster_agreement.reconcile` records the
committed version in Dagster the next time the stage is run or read, so the two agree again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import ConfigDict, Field, field_validator
from upath import UPath

from dd_assets.spec.known_fields import refuse_unknown_fields
from dd_assets.spec.secrets import (
    LiteralSecretError,
    credential_paths,
    env_var_name,
    literal_credentials,
    nested_env_vars,
    require_env_var_name,
    url_credentials,
)
from dd_assets.storage.dagster_agreement import reconcile_if_idle
from dd_assets.storage.dataset import StageDataset
from dd_assets.storage.partitioning import STORED
from dd_assets.storage.publish import StageOutput
from dd_assets.storage.records import StageStorageError
from dd_assets.storage.stage_lock import StageLock
from dd_assets.storage.stage_store import StageStore


class StageParquetIOManager(dg.ConfigurableIOManager):
    """Stores every stage in ``<base_dir>/<workflow>/<stage>/`` (IO manager key ``"dd_stage_io_manager"``).

    Attributes:
        base_dir: a local path or an fsspec URL (``s3://bucket/prefix``) read through universal_pathlib.
        storage_options: fsspec options for a URL ``base_dir`` (endpoint, region, ...). Credentials are not
            accepted here as values: give them as ``dg.EnvVar("NAME")`` or in ``storage_secrets``.
        storage_secrets: fsspec options read from environment variables: option name -> variable name,
            e.g. ``{"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY"}``.
        local_work_dir: where stages run before upload when ``base_dir`` is not local (default: a temp dir).
        lock_timeout_s: how long a run waits for another run of the same stage to finish (default: fail at once).
        lock_lease_s: on an ``s3://`` base_dir, how long a writer's lease lasts without renewal; a run that dies
            holding a stage is taken over this long after its last renewal (see
            ``dd_assets.storage.object_store_lock``).
        checkpoint_every_s: on a URL base_dir, a running stage copies each batch to the store as it finishes, so a
            retry on another machine resumes them, and Data Designer's metadata and the tokens spent this often
            between batches (see ``dd_assets.run.remote_checkpoint``); 0 turns it off.
    """

    # Validation errors never echo the input: storage options may hold a credential.
    model_config = ConfigDict(hide_input_in_errors=True)

    base_dir: str = "data"
    storage_options: dict[str, Any | None] = Field(default_factory=dict)  # null members allowed (see the resource)
    storage_secrets: dict[str, str] = Field(default_factory=dict)
    local_work_dir: str | None = None
    lock_timeout_s: float = 0.0
    lock_lease_s: float = 60.0
    checkpoint_every_s: float = 2.0

    def __init__(self, **data: Any) -> None:
        refuse_unknown_fields(type(self), data)
        options = dict(data.get("storage_options") or {})
        moved = {key: env_var_name(value) for key, value in options.items() if isinstance(value, dg.EnvVar)}
        if moved:  # dg.EnvVar("NAME") becomes a storage secret: the name stays in config, never the value
            data["storage_options"] = {k: v for k, v in options.items() if k not in moved}
            data["storage_secrets"] = {**(data.get("storage_secrets") or {}), **moved}
        super().__init__(**data)

    @classmethod
    def configure_at_launch(cls, **kwargs: Any) -> Any:
        """As Dagster's, refusing unknown fields now rather than when a run starts."""
        refuse_unknown_fields(cls, kwargs)
        return super().configure_at_launch(**kwargs)

    @field_validator("storage_options")
    @classmethod
    def _no_literal_credentials(cls, options: dict[str, Any | None]) -> dict[str, Any | None]:
        nested = nested_env_vars(options)
        if nested:
            raise ValueError(
                f"storage_options {', '.join(map(repr, nested))}: dg.EnvVar is only read at the top level of "
                "storage_options; put the credential in storage_secrets under its top-level option name"
            )
        found = credential_paths(options)
        if found:
            raise ValueError(
                f"storage_options {', '.join(map(repr, found))} would put a credential into Dagster's run config "
                "and UI (the value is not repeated here); give it as dg.EnvVar('NAME') or in "
                "storage_secrets={'<option>': '<ENV_VAR_NAME>'}"
            )
        found = literal_credentials(options)  # URLs with user:password@ or ?key=, auth headers, in lists too
        if found:
            raise ValueError(
                f"storage_options {'; '.join(found)}: that would put a credential into Dagster's run config and UI "
                "(the value is not repeated here); give credentials in storage_secrets (or as dg.EnvVar at the top "
                "level), and URLs (endpoint_url, proxies) without them"
            )
        return options

    @field_validator("base_dir")
    @classmethod
    def _no_credentials_in_base_dir(cls, base_dir: str) -> str:
        reason = url_credentials(base_dir)
        if reason:
            raise ValueError(
                f"base_dir holds a credential ({reason}; the value is not repeated here); give credentials in "
                "storage_secrets"
            )
        return base_dir

    @field_validator("storage_secrets")
    @classmethod
    def _secrets_are_names(cls, secrets: dict[str, str]) -> dict[str, str]:
        for option, name in secrets.items():
            try:
                require_env_var_name(name, f"storage_secrets[{option!r}]")
            except LiteralSecretError as exc:
                raise ValueError(str(exc)) from None
        return secrets

    # --- the store -----------------------------------------------------------------------------
    @property
    def store(self) -> StageStore:
        """The stages under ``base_dir``, as this configuration names them."""
        return StageStore(
            base_dir=self.base_dir,
            storage_options=dict(self.storage_options),
            storage_secrets=dict(self.storage_secrets),
            local_work_dir=self.local_work_dir,
            lock_timeout_s=self.lock_timeout_s,
            lock_lease_s=self.lock_lease_s,
        )

    def resolved_storage_options(self) -> dict[str, Any]:
        """See :meth:`StageStore.resolved_storage_options`."""
        return self.store.resolved_storage_options()

    def secret_values(self) -> list[str]:
        """See :meth:`StageStore.secret_values`."""
        return self.store.secret_values()

    @property
    def is_local(self) -> bool:
        """See :attr:`StageStore.is_local`."""
        return self.store.is_local

    def stage_dir(self, workflow: str, stage: str, partition: str | None = None) -> UPath:
        """See :meth:`StageStore.stage_dir`."""
        return self.store.stage_dir(workflow, stage, partition)

    def work_root(self, workflow: str, stage: str, partition: str | None = None) -> Path:
        """See :meth:`StageStore.work_root`."""
        return self.store.work_root(workflow, stage, partition)

    def lock_path(self, workflow: str, stage: str, partition: str | None = None) -> Path:
        """See :meth:`StageStore.lock_path`."""
        return self.store.lock_path(workflow, stage, partition)

    def stage_lock(
        self, workflow: str, stage: str, run_id: str, *, reader: bool = False, partition: str | None = None
    ) -> StageLock:
        """See :meth:`StageStore.stage_lock`."""
        return self.store.stage_lock(workflow, stage, run_id, reader=reader, partition=partition)

    def read_record(self, workflow: str, stage: str, partition: str | None = None) -> dict[str, Any] | None:
        """See :meth:`StageStore.read_record`."""
        return self.store.read_record(workflow, stage, partition)

    def set_aside_unreadable_record(self, workflow: str, stage: str, partition: str | None = None) -> UPath:
        """See :meth:`StageStore.set_aside_unreadable_record`."""
        return self.store.set_aside_unreadable_record(workflow, stage, partition)

    def stored_partitions(self, workflow: str, stage: str) -> list[str]:
        """See :meth:`StageStore.stored_partitions`."""
        return self.store.stored_partitions(workflow, stage)

    def read_stage(
        self,
        workflow: str,
        stage: str,
        partition_key: str | None = None,
        *,
        partition_keys: list[str] | None = None,
        partitions_def: dg.PartitionsDefinition | None | str = STORED,
    ) -> StageDataset:
        """See :meth:`StageStore.read_stage`."""
        return self.store.read_stage(
            workflow, stage, partition_key, partition_keys=partition_keys, partitions_def=partitions_def
        )

    def publish(self, output: StageOutput) -> dict[str, Any]:
        """See :meth:`StageStore.publish`."""
        return self.store.publish(output)

    # --- dagster hooks -------------------------------------------------------------------------
    def handle_output(self, context: dg.OutputContext, obj: StageOutput) -> None:
        if not isinstance(obj, StageOutput):
            raise StageStorageError(
                f"{context.asset_key.to_user_string()}: dd_stage_io_manager stores Data Designer stages only, "
                f"got {type(obj).__name__}"
            )
        self.store.publish(obj)

    def load_input(self, context: dg.InputContext) -> Any:
        upstream = context.upstream_output
        workflow, stage = stage_of(upstream.asset_key, upstream.definition_metadata)
        store = self.store
        if context.has_asset_partitions:  # the upstream partitions this run reads, in the definition's key order
            wanted = set(context.asset_partition_keys)
            every = context.asset_partitions_def.get_partition_keys(dynamic_partitions_store=context.instance)
            keys = [key for key in every if key in wanted] + sorted(wanted - set(every))
            for key in keys:
                reconcile_if_idle(store, workflow, stage, upstream.asset_key, context.instance, context.log, key)
            dataset = store.read_stage(
                workflow,
                stage,
                keys[0] if len(keys) == 1 else None,
                partition_keys=keys,
                partitions_def=context.asset_partitions_def,
            )
        else:
            reconcile_if_idle(store, workflow, stage, upstream.asset_key, context.instance, context.log)
            try:  # None: the upstream is not partitioned, so its own output is read (never an old partitioning's)
                upstream_partitions = context.asset_partitions_def
            except dg.DagsterInvariantViolationError:
                upstream_partitions = None
            dataset = store.read_stage(workflow, stage, partitions_def=upstream_partitions)
        wanted = context.dagster_type.typing_type if context.dagster_type else None
        if wanted is pa.Table:
            return dataset.to_arrow()
        if getattr(wanted, "__name__", None) == "DataFrame" and getattr(wanted, "__module__", "").startswith("pandas"):
            return dataset.to_pandas()
        return dataset


def stage_of(asset_key: dg.AssetKey, definition_metadata: Any = None) -> tuple[str, str]:
    """``(workflow, stage)`` of a stage asset: from its definition metadata, else from a ``[workflow, stage]`` key."""
    metadata = definition_metadata or {}
    workflow, stage = metadata.get("dd_assets/workflow"), metadata.get("dd_assets/stage")
    workflow = getattr(workflow, "value", workflow)
    stage = getattr(stage, "value", stage)
    if isinstance(workflow, str) and isinstance(stage, str):
        return workflow, stage
    if len(asset_key.path) != 2:
        raise StageStorageError(
            f"{asset_key.to_user_string()}: not a dd_assets stage (expected dd_assets/workflow and dd_assets/stage "
            "metadata, or a [workflow, stage] key)"
        )
    return asset_key.path[0], asset_key.path[1]
