"""Seeds: turning a stage's upstream outputs into the parquet seed Data Designer reads.

One upstream: its files, linked into the work directory. Several: ``concat`` appends rows in
``depends_on`` order (column union); ``zip`` puts row i of each side by side (equal row counts; a
column that several upstreams share must hold equal values and appears once); a callable gets
``dict[str, StageDataset]`` and returns a DataFrame, Arrow table or parquet path. External assets are
loaded by their own IO manager and written as parquet.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from data_designer.config.config_builder import DataDesignerConfigBuilder
from data_designer.config.seed import IndexRange, PartitionBlock
from data_designer.config.seed_source import LocalFileSeedSource
from upath import UPath

from dd_assets.run.resumable_work import SEED_DIR
from dd_assets.spec.stage_config import load_stage_config
from dd_assets.spec.workflow import Stage
from dd_assets.storage.dataset import StageDataset


class StageSeedError(ValueError):
    """Upstream outputs cannot be combined into a seed."""


@dataclass
class Seed:
    """The seed a stage generates from."""

    glob: str
    num_rows: int
    columns: list[str]
    # seed column -> upstream columns it comes from, as (asset key, column)
    sources: dict[str, list[tuple[dg.AssetKey, str]]] = field(default_factory=dict)


def upstream_label(dep: str | dg.AssetKey) -> str:
    """The name a callable ``combine`` sees an upstream under."""
    return dep if isinstance(dep, str) else dep.to_user_string()


def as_stage_dataset(value: Any, *, where: str, work_dir: Path, name: str) -> StageDataset:
    """Coerce what an upstream IO manager loaded (dataset, DataFrame, Arrow table, path) into a StageDataset."""
    if isinstance(value, StageDataset):
        return value
    if isinstance(value, (str, os.PathLike)):
        path = UPath(value)
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        return StageDataset.from_files(path, files)
    table = _as_table(value)
    if table is None:
        raise StageSeedError(
            f"{where}, field 'depends_on': upstream {name!r} loaded a {type(value).__name__}; "
            "a stage can read a pandas DataFrame, an Arrow table, a parquet path or a StageDataset"
        )
    target = work_dir / "upstreams" / f"{name.replace('/', '__')}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, target)
    return StageDataset.from_files(UPath(target.parent), [UPath(target)])


def _as_table(value: Any) -> pa.Table | None:
    if isinstance(value, pa.Table):
        return value
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas ships with Data Designer
        return None
    if isinstance(value, pd.DataFrame):
        return pa.Table.from_pandas(value, preserve_index=False)
    return None


def build_seed(
    stage: Stage,
    upstreams: dict[str | dg.AssetKey, StageDataset],
    upstream_keys: dict[str | dg.AssetKey, dg.AssetKey],
    work_dir: Path,
    *,
    where: str,
) -> Seed | None:
    """Write the stage's seed under ``work_dir/seed`` and describe it; ``None`` for a root stage."""
    if not upstreams:
        return None
    seed_dir = work_dir / SEED_DIR
    shutil.rmtree(seed_dir, ignore_errors=True)
    seed_dir.mkdir(parents=True)
    order = list(stage.depends_on)

    if len(order) == 1:
        dataset = upstreams[order[0]]
        key = upstream_keys[order[0]]
        _link_files(dataset, seed_dir)
        columns = dataset.columns
        return Seed(
            glob=str(seed_dir / "*.parquet"),
            num_rows=dataset.num_rows,
            columns=columns,
            sources={c: [(key, c)] for c in columns},
        )

    if stage.combine == "concat":
        table = _concat(stage, order, upstreams, where)
        sources: dict[str, list[tuple[dg.AssetKey, str]]] = {}
        for dep in order:
            for column in upstreams[dep].columns:
                sources.setdefault(column, []).append((upstream_keys[dep], column))
    elif stage.combine == "zip":
        table, sources = _zip(order, upstreams, upstream_keys, where)
    else:
        table, sources = _call_combine(stage, order, upstreams, upstream_keys, work_dir, where)

    path = seed_dir / "combined.parquet"
    pq.write_table(table, path)
    return Seed(glob=str(seed_dir / "*.parquet"), num_rows=table.num_rows, columns=table.column_names, sources=sources)


def _link_files(dataset: StageDataset, seed_dir: Path) -> None:
    for index, file in enumerate(dataset.files):
        target = seed_dir / f"part-{index:05d}.parquet"
        if file.protocol in ("", "file", "local"):
            try:
                os.link(file.path, target)
                continue
            except OSError:
                pass
        with file.open("rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)
    if not dataset.files:
        pq.write_table(dataset.schema.empty_table(), seed_dir / "part-00000.parquet")


def _concat(stage: Stage, order: list, upstreams: dict, where: str) -> pa.Table:
    tables = [upstreams[dep].to_arrow() for dep in order]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise StageSeedError(f"{where}, field 'combine': cannot concat upstreams {order}: {exc}") from exc


def _zip(order: list, upstreams: dict, upstream_keys: dict, where: str):
    counts = {upstream_label(dep): upstreams[dep].num_rows for dep in order}
    if len(set(counts.values())) > 1:
        raise StageSeedError(
            f"{where}, field 'combine': zip needs equal row counts, got "
            + ", ".join(f"{name}={count}" for name, count in counts.items())
        )
    columns: dict[str, pa.ChunkedArray] = {}
    owners: dict[str, str] = {}
    sources: dict[str, list[tuple[dg.AssetKey, str]]] = {}
    for dep in order:
        table = upstreams[dep].to_arrow()
        for name in table.column_names:
            array = table.column(name)
            sources.setdefault(name, []).append((upstream_keys[dep], name))
            if name in columns:
                if not columns[name].equals(array):
                    raise StageSeedError(
                        f"{where}, field 'combine': zip upstreams {owners[name]!r} and {upstream_label(dep)!r} both "
                        f"have column {name!r} with different values; rename one, or drop it with a processor"
                    )
                continue
            columns[name] = array
            owners[name] = upstream_label(dep)
    return pa.table(columns), sources


def _call_combine(stage: Stage, order: list, upstreams: dict, upstream_keys: dict, work_dir: Path, where: str):
    named = {upstream_label(dep): upstreams[dep] for dep in order}
    try:
        result = stage.combine(named)
    except Exception as exc:
        raise StageSeedError(f"{where}, field 'combine': the combine function raised {exc!r}") from exc
    if isinstance(result, (str, os.PathLike)):
        table = as_stage_dataset(result, where=where, work_dir=work_dir, name="combine").to_arrow()
    else:
        table = _as_table(result)
        if table is None:
            raise StageSeedError(
                f"{where}, field 'combine': the combine function returned a {type(result).__name__}; "
                "return a pandas DataFrame, an Arrow table or a parquet path"
            )
    sources: dict[str, list[tuple[dg.AssetKey, str]]] = {}
    for dep in order:
        for column in upstreams[dep].columns:
            if column in table.column_names:
                sources.setdefault(column, []).append((upstream_keys[dep], column))
    return table, sources


def builder_with_seed(
    stage: Stage,
    seed: Seed | None,
    selection_strategy: IndexRange | PartitionBlock | None,
    own_seed_block: PartitionBlock | None = None,
) -> DataDesignerConfigBuilder:
    """A fresh copy of the stage's config reading the seed it generates from: ``seed`` (the upstream output,
    replacing any seed of the config), or for a partition of a root stage ``own_seed_block`` of the config's seed."""
    builder = load_stage_config(stage.builder)
    if seed is not None:
        builder.with_seed_dataset(
            LocalFileSeedSource(path=seed.glob),
            sampling_strategy=stage.sampling_strategy,
            selection_strategy=selection_strategy,
        )
    elif own_seed_block is not None and builder.get_seed_config() is not None:
        own = builder.get_seed_config()
        builder.with_seed_dataset(
            own.source, sampling_strategy=own.sampling_strategy, selection_strategy=own_seed_block
        )
    return builder
