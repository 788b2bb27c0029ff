"""Which version of every ancestor a stage output derives from, so a join never combines two versions of one.

Each published ``stage.json`` records ``lineage``: ancestor -> the data version it was built from, for every stage
above it (``<workflow>/<stage>``, or ``<workflow>/<stage>[<partition>]`` for one partition; an external asset by
its key). A stage with several upstreams (``concat``, ``zip``, a callable ``combine``) or a whole read of a
partitioned upstream checks that its inputs agree on every ancestor they share: two runs interleaving (one
re-materializing a shared upstream while the other's branch still generates from the old version) would otherwise
pair rows of two versions, even when the branches share no column for the zip check to compare.
"""

from __future__ import annotations

from typing import Any

Lineage = dict[str, str]


class MixedVersionsError(ValueError):
    """Upstreams derive from different versions of a common ancestor; the message names them."""


def record_lineage(record: dict[str, Any], fallback_key: str, fallback_version: str | None) -> dict[str, Lineage]:
    """Each output part's lineage (itself included), by part label: one part, or one per partition of a whole read."""
    parts = record.get("partitions")
    if isinstance(parts, dict) and parts:
        return {
            f"{fallback_key}[{key}]": _own_lineage(part, f"{fallback_key}[{key}]", part.get("data_version"))
            for key, part in parts.items()
        }
    return {fallback_key: _own_lineage(record, fallback_key, fallback_version)}


def _own_lineage(record: dict[str, Any], fallback_key: str, fallback_version: str | None) -> Lineage:
    key = output_key(record) or fallback_key
    version = record.get("data_version") or fallback_version
    lineage = dict(record.get("lineage") or {})
    if version is not None:
        lineage[key] = str(version)
    return lineage


def output_key(record: dict[str, Any]) -> str | None:
    """``<workflow>/<stage>`` (with ``[<partition>]``) of a stage record, or ``None`` for a record of another kind."""
    workflow, stage = record.get("workflow"), record.get("stage")
    if not isinstance(workflow, str) or not isinstance(stage, str):
        return None
    partition = record.get("partition")
    return f"{workflow}/{stage}[{partition}]" if isinstance(partition, str) else f"{workflow}/{stage}"


def merged_lineage(inputs: dict[str, Lineage]) -> Lineage:
    """The union of the inputs' lineages; raises :class:`MixedVersionsError` when two disagree on an ancestor."""
    merged: Lineage = {}
    via: dict[str, str] = {}
    conflicts: dict[str, dict[str, list[str]]] = {}
    for label, lineage in inputs.items():
        for ancestor, version in sorted(lineage.items()):
            if ancestor in merged and merged[ancestor] != version:
                sides = conflicts.setdefault(ancestor, {merged[ancestor]: [via[ancestor]]})
                sides.setdefault(version, []).append(label)
                continue
            merged.setdefault(ancestor, version)
            via.setdefault(ancestor, label)
            if ancestor in conflicts:
                conflicts[ancestor][version].append(label)
    if conflicts:
        lines = []
        for ancestor, sides in sorted(conflicts.items()):
            described = "; ".join(f"version {v} via {', '.join(map(repr, labels))}" for v, labels in sides.items())
            lines.append(f"{ancestor!r} ({described})")
        raise MixedVersionsError(
            "its upstreams derive from different versions of "
            + ", and of ".join(lines)
            + ": combining them would mix rows of two versions. Re-materialize the stages built from the older "
            "version (or the whole workflow) so that every upstream derives from the same one; nothing was generated "
            "or published"
        )
    return merged


def stale_partition_blocks(records: dict[str, dict[str, Any]], keys: list[str] | None = None) -> dict[str, str]:
    """Partitions whose block of a split seed no longer fits the partitioning, with why (``{}``: none).

    A partition that splits its seed takes block ``index`` of ``count`` (``stage.json``'s ``partition_block``).
    Adding a key to a dynamic or time-window definition changes ``count`` for every partition, so partitions
    published before it hold rows that the newer ones hold too. ``keys`` are the definition's keys in order; without
    them, the published partitions must agree on one count and be that many.
    """
    blocks = {key: record["partition_block"] for key, record in records.items() if record.get("partition_block")}
    if not blocks:
        return {}
    if keys is not None:
        expected = {key: (keys.index(key), len(keys)) for key in blocks if key in keys}
    else:
        counts = {block.get("count") for block in blocks.values()}
        count = max(c for c in counts if isinstance(c, int))
        expected = {key: (block.get("index"), count) for key, block in blocks.items()}
    stale = {}
    for key, block in blocks.items():
        want = expected.get(key)
        if want is None:
            continue
        if (block.get("index"), block.get("count")) != want:
            stale[key] = (
                f"took block {block.get('index')} of {block.get('count')} of its seed, but the stage now has "
                f"{want[1]} partitions"
            )
    return stale
