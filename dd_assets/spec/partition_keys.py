"""A stage split into N static partitions: the partition keys and each partition's share of the records."""

from __future__ import annotations


def static_partition_keys(count: int) -> list[str]:
    """``"0"``..``"count-1"``, zero-padded to equal width (so key order is also text order)."""
    width = len(str(count - 1))
    return [f"{index:0{width}d}" for index in range(count)]


def partition_share(total: int, index: int, count: int) -> int:
    """Partition ``index``'s share of ``total`` records split over ``count`` partitions (remainder goes first)."""
    return total // count + (1 if index < total % count else 0)
