"""Which partitioning a stage is stored under: the id of a partitions definition, and which records belong to it.

``partitioning.json`` names the partitioning a stage was last published under; whole-stage reads use only the
partitions published under it, never those (or the unpartitioned output) of an earlier one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import dagster as dg

STORED = "stored"
"""``read_stage(partitions_def=STORED)``: the stage's partitioning as storage records it (see read_stage)."""


def partitioning_id(partitions_def: dg.PartitionsDefinition) -> str:
    """What identifies a partitioning in storage: a static definition's keys, else its class and description
    (a dynamic or time-window definition keeps its id as keys are added)."""
    from dd_assets.spec.versioning import partitions_fingerprint

    return hashlib.sha256(json.dumps(partitions_fingerprint(partitions_def), sort_keys=True).encode()).hexdigest()[:16]


def definition_keys(partitions_def: dg.PartitionsDefinition) -> list[str] | None:
    """The keys of a definition when they are known without a Dagster instance (not for dynamic partitions)."""
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        return None
    try:
        return list(partitions_def.get_partition_keys())
    except Exception:  # noqa: BLE001 - e.g. a multi-partition definition with a dynamic dimension
        return None


def partitioning_record(partitions_def: dg.PartitionsDefinition | None) -> dict[str, Any]:
    """What ``partitioning.json`` says of a stage published under ``partitions_def`` (``None``: unpartitioned)."""
    if partitions_def is None:
        return {"partitioning": None}
    return {
        "partitioning": partitioning_id(partitions_def),
        "keys": definition_keys(partitions_def),
        "definition": str(partitions_def),
    }


def of_partitioning(record: dict[str, Any], wanted: str | None, keys: list[str] | None) -> bool:
    """Whether a partition's record belongs to the partitioning ``wanted``. A record written before records named
    their partitioning counts when its key is one of ``keys`` (or they are unknown): it cannot be told apart."""
    if "partitioning" in record:
        return record["partitioning"] == wanted
    return keys is None or record.get("partition") in keys
