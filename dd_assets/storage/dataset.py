"""StageDataset: a read handle on the published output of a stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class StageDataset:
    """The selected output of a stage, as published by :class:`~dd_assets.StageParquetIOManager`.

    Attributes:
        path: the folder holding exactly this version's files (``versions/<version>`` of the stage).
        files: the parquet files of this version, in order (read these, not a glob of ``path``).
        num_rows: row count, read from parquet footers.
        schema: Arrow schema of the output.
        status: ``completed``, ``completed_empty``, ``skipped_empty_upstream`` or ``overridden``.
        record: the full ``stage.json`` record (versions, counts, upstream versions).
    """

    path: UPath
    files: tuple[UPath, ...]
    num_rows: int
    schema: pa.Schema
    status: str = "completed"
    record: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_empty(self) -> bool:
        """True when the output has no rows."""
        return self.num_rows == 0

    @property
    def columns(self) -> list[str]:
        """Column names of the output."""
        return list(self.schema.names)

    def to_arrow(self) -> pa.Table:
        """Read the whole output as one Arrow table (of :attr:`schema`)."""
        tables = []
        for file in self.files:
            with file.open("rb") as handle:
                tables.append(pq.read_table(handle))
        return self._as_schema(tables)

    def _as_schema(self, tables: list[pa.Table]) -> pa.Table:
        # The schema was unified permissively (int64 and double give double, a column missing from one file is
        # null there): the tables are combined by the same rule, so whatever could be published can be read.
        return pa.concat_tables([self.schema.empty_table(), *tables], promote_options="permissive")

    def head(self, rows: int = 5) -> pa.Table:
        """The first ``rows`` rows, reading only as many files as needed."""
        tables, remaining = [], rows
        for file in self.files:
            if remaining <= 0:
                break
            with file.open("rb") as handle:
                table = pq.read_table(handle).slice(0, remaining)
            tables.append(table)
            remaining -= table.num_rows
        return self._as_schema(tables)

    def to_pandas(self) -> pd.DataFrame:
        """Read the whole output as a pandas DataFrame."""
        return self.to_arrow().to_pandas()

    @classmethod
    def combine(cls, parts: list[StageDataset], path: UPath) -> StageDataset:
        """Several partitions of a stage as one dataset, in the given order.

        ``record`` holds each partition's record under ``partitions`` and a ``data_version`` of them all.
        """
        import hashlib

        schemas = [part.schema for part in parts if part.num_rows or part.schema.names]
        schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
        versions = [str(part.record.get("data_version")) for part in parts]
        num_rows = sum(part.num_rows for part in parts)
        record = {
            "partitions": {str(part.record.get("partition")): part.record for part in parts},
            "data_version": hashlib.sha256("|".join(versions).encode()).hexdigest()[:16],
            "output_rows": num_rows,
        }
        return cls(
            path=path,
            files=tuple(file for part in parts for file in part.files),
            num_rows=num_rows,
            schema=schema,
            status="completed" if num_rows else (parts[0].status if parts else "completed_empty"),
            record=record,
        )

    @classmethod
    def from_files(cls, path: UPath, files: list[UPath], *, status: str = "completed", record: dict | None = None):
        """Build a handle from parquet files, reading only their footers."""
        num_rows = 0
        schemas = []
        for file in files:
            with file.open("rb") as handle:
                meta = pq.ParquetFile(handle).metadata
                num_rows += meta.num_rows
                schemas.append(meta.schema.to_arrow_schema())
        schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
        return cls(path=path, files=tuple(files), num_rows=num_rows, schema=schema, status=status, record=record or {})
