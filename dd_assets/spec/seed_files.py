"""A stage's own seed and its record count, known when definitions load.

Reading a root stage's own seed file (its rows and columns) and resolving how many records a run generates are
declaration-time facts: validation, code versions, the column flow, ``dd-assets estimate`` and the runner all use
this one resolution.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
from data_designer.config.seed import IndexRange, PartitionBlock
from data_designer.config.utils.constants import DEFAULT_NUM_RECORDS

from dd_assets.spec.partition_keys import partition_share

if TYPE_CHECKING:
    from dd_assets.spec.workflow import Stage


def local_seed_files(builder) -> list[Path] | None:
    """The files of a config's own local seed (its path or wildcard), or ``None`` when it has no local seed."""
    seed = builder.get_seed_config()
    source = getattr(seed, "source", None)
    path = getattr(source, "path", None)
    if seed is None or getattr(source, "seed_type", None) != "local" or not path:
        return None
    pattern = Path(path)
    return sorted(pattern.parent.glob(pattern.name)) if "*" in pattern.name else [pattern]


def own_seed_rows(builder) -> int | None:
    """Row count of a root stage's own local seed file(s) or in-memory DataFrame, or ``None`` when unknown."""
    source = getattr(builder.get_seed_config(), "source", None)
    if getattr(source, "seed_type", None) == "df":
        return len(source.df)
    files = local_seed_files(builder)
    if files is None:
        return None
    total = 0
    for file in files:
        if file.suffix == ".parquet":
            total += pq.read_metadata(file).num_rows
        elif file.suffix == ".jsonl":
            with open(file, encoding="utf-8") as handle:
                total += sum(1 for line in handle if line.strip())
        else:
            import pandas as pd

            total += len(pd.read_csv(file) if file.suffix == ".csv" else pd.read_json(file))
    return total


def selected_rows(rows: int, selection: IndexRange | PartitionBlock | None) -> int | None:
    """Rows a selection strategy picks out of ``rows`` seed rows (``None`` without a selection)."""
    if isinstance(selection, IndexRange):
        return max(0, min(selection.end, rows - 1) - selection.start + 1)
    if isinstance(selection, PartitionBlock):
        if rows < selection.num_partitions:
            return None  # Data Designer rejects it with its own message
        return selection.to_index_range(rows).size
    return None


class RecordCountError(ValueError):
    """A stage's record count cannot be resolved (the message names the field, not the stage)."""


def combined_seed_rows(stage: Stage, upstream_rows: list[int | None]) -> int | None:
    """Rows of the seed a stage builds from upstreams of these row counts (``depends_on`` order): ``concat`` adds
    them, ``zip`` and a single upstream keep the first's (``zip`` requires equal counts). ``None`` when a count is
    unknown or ``combine`` is a callable. :mod:`dd_assets.run.seeds` builds the seed these counts describe."""
    if not upstream_rows or any(count is None for count in upstream_rows) or callable(stage.combine):
        return None
    return sum(upstream_rows) if stage.combine == "concat" else upstream_rows[0]


def resolve_num_records(
    stage: Stage,
    upstream_rows: int | None,
    *,
    override: int | None = None,
    partition: tuple[int, int] | None = None,
    partition_block: PartitionBlock | None = None,
) -> int:
    """Records a stage run generates: run config ``override`` > ``Stage.num_records`` (a partition's share) > the
    rows its seed selection picks > the seed's rows > Data Designer's default. The one resolution of the runner and
    of ``estimate``.

    ``upstream_rows``: rows of the seed built from the upstreams, ``None`` for a root stage (its own seed file is
    counted and its own ``selection_strategy`` applies). ``partition``: ``(index, count)`` of this run's partition;
    ``partition_block``: the block of the seed the partition takes, when it splits its seed.
    """
    if override:
        return override
    if stage.num_records:
        if partition is None:
            return stage.num_records
        share = partition_share(stage.num_records, *partition)
        if share < 1:
            raise RecordCountError(
                f"num_records {stage.num_records} split over {partition[1]} partitions leaves this "
                "partition no records; raise num_records or use fewer partitions"
            )
        return share
    if upstream_rows is not None:
        rows, selection = upstream_rows, partition_block or stage.selection_strategy
    else:
        rows = own_seed_rows(stage.builder)
        own = stage.builder.get_seed_config()
        selection = partition_block or (own.selection_strategy if own is not None else None)
    if rows is None:
        return DEFAULT_NUM_RECORDS
    return selected_rows(rows, selection) or rows or DEFAULT_NUM_RECORDS
