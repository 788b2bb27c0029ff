"""``dd-assets export``: a stage's published output written to a ``.jsonl``, ``.csv`` or ``.parquet`` file."""

from __future__ import annotations

import base64
import csv
import datetime
import json
import math
from pathlib import Path
from typing import Any

from dd_assets.storage.records import StageStorageError
from dd_assets.tools.code_location import CodeLocation
from dd_assets.tools.command_error import CommandError

EXPORT_SUFFIXES = (".jsonl", ".csv", ".parquet")


def export(location: CodeLocation, ref: str, out: str, partition: str | None, force: bool = False) -> int:
    """Write a stage's published output to ``out`` (by suffix); returns the row count.

    An existing ``out`` is replaced only with ``force``. Parquet keeps every value as stored; in ``.jsonl`` and
    ``.csv`` binary values are base64, NaN and infinities are JSON ``null`` (``.csv``: ``NaN``, ``inf``, ``-inf``),
    timestamps ISO 8601, and nested values (lists, structs, maps) JSON.
    """
    workflow, stage = location.stage(ref)
    target = Path(out)
    if target.suffix not in EXPORT_SUFFIXES:
        raise CommandError(f"{out}: the file must end in {', '.join(EXPORT_SUFFIXES)}", code=2)
    if not force and (target.exists() or target.is_symlink()):
        raise CommandError(f"{out} already exists; pass --force to overwrite it")
    if partition is not None and stage.partitions_def is None:
        raise CommandError(f"{ref} is not partitioned; leave out --partition", code=2)
    try:
        dataset = location.io_manager.read_stage(
            workflow.name, stage.name, partition, partitions_def=stage.partitions_def
        )
    except StageStorageError as exc:
        raise CommandError(str(exc)) from None
    table = dataset.to_arrow()
    tmp = target.with_name(f".{target.name}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        elif target.suffix == ".csv":
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(table.column_names)
                writer.writerows(_rows(table, _csv_cell))
        else:
            with open(tmp, "w", encoding="utf-8") as handle:
                names = table.column_names
                for row in _rows(table, _json_value):
                    handle.write(json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False, allow_nan=False))
                    handle.write("\n")
        tmp.replace(target)
    except OSError as exc:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise CommandError(f"cannot write {out}: {exc.strerror or exc}") from None
    return table.num_rows


def _rows(table: Any, cell: Any) -> Any:
    """The rows of an Arrow table, each value through ``cell(value, arrow_type)``, a batch at a time."""
    types = [field.type for field in table.schema]
    for batch in table.to_batches(max_chunksize=10_000):
        columns = [column.to_pylist() for column in batch.columns]
        for row in zip(*columns, strict=True):
            yield [cell(value, kind) for value, kind in zip(row, types, strict=True)]


def _json_value(value: Any, kind: Any) -> Any:
    """One value of Arrow type ``kind`` as valid JSON: binary base64, NaN and infinities null, times ISO 8601."""
    import pyarrow as pa

    if value is None:
        return None
    if pa.types.is_dictionary(kind):
        return _json_value(value, kind.value_type)
    if pa.types.is_floating(kind):
        return value if math.isfinite(value) else None
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return base64.b64encode(value).decode("ascii")
    if pa.types.is_map(kind):
        if pa.types.is_string(kind.key_type) or pa.types.is_large_string(kind.key_type):
            return {k: _json_value(v, kind.item_type) for k, v in value}
        return [[_json_value(k, kind.key_type), _json_value(v, kind.item_type)] for k, v in value]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [_json_value(v, kind.value_type) for v in value]
    if pa.types.is_struct(kind):
        return {field.name: _json_value(value.get(field.name), field.type) for field in kind}
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, str | int | bool):
        return value
    return str(value)  # decimals, durations: their exact text


def _csv_cell(value: Any, kind: Any) -> Any:
    """One value as a CSV cell: null is empty, NaN and infinities ``NaN``/``inf``/``-inf``, nested values JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    value = _json_value(value, kind)
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    return value
