"""Materialization metadata of a stage: Dagster's standard keys plus ``dd_assets/*``."""

from __future__ import annotations

import json
import math
from typing import Any

import dagster as dg
import pyarrow as pa
from data_designer.config.config_builder import DataDesignerConfigBuilder

from dd_assets.run.seeds import Seed
from dd_assets.storage.dagster_agreement import model_usage_metadata
from dd_assets.storage.dataset import StageDataset

PREVIEW_ROWS = 5
PREVIEW_CELL_CHARS = 80


def column_schema(schema: pa.Schema, planned: dg.TableSchema | None = None) -> dg.TableSchema:
    """A Dagster table schema from an Arrow schema, with the descriptions of the ``planned`` schema (the one the
    stage's definition carries, see :mod:`dd_assets.spec.column_schema`) where the names match."""
    descriptions = {c.name: c.description for c in planned.columns} if planned is not None else {}
    return dg.TableSchema(
        columns=[dg.TableColumn(name=f.name, type=str(f.type), description=descriptions.get(f.name)) for f in schema]
    )


def generated_column_reads(builder: DataDesignerConfigBuilder) -> dict[str, set[str]]:
    """For each generated column, the columns its templates read directly."""
    reads: dict[str, set[str]] = {}
    for config in builder.get_column_configs():
        required = set(getattr(config, "required_columns", []) or [])
        reads[config.name] = required
        for side_effect in getattr(config, "side_effect_columns", []) or []:
            reads.setdefault(side_effect, set()).add(config.name)
    return reads


def column_lineage(
    builder: DataDesignerConfigBuilder, seed: Seed | None, output_columns: list[str]
) -> dg.TableColumnLineage:
    """Seed pass-through columns map to their upstream column; generated columns to the upstream columns
    their templates read, followed through other generated columns of the stage."""
    sources = seed.sources if seed is not None else {}
    reads = generated_column_reads(builder)

    def upstream_deps(column: str, seen: set[str]) -> set[tuple[dg.AssetKey, str]]:
        if column in seen:
            return set()
        seen.add(column)
        if column in reads:
            deps: set[tuple[dg.AssetKey, str]] = set()
            for read in reads[column]:
                deps |= upstream_deps(read, seen)
            return deps
        return set(sources.get(column, []))

    deps_by_column = {}
    for column in output_columns:
        deps = upstream_deps(column, set())
        if deps:
            deps_by_column[column] = [
                dg.TableColumnDep(asset_key=key, column_name=name) for key, name in sorted(deps, key=str)
            ]
    return dg.TableColumnLineage(deps_by_column=deps_by_column)


def markdown_preview(table: pa.Table, rows: int = PREVIEW_ROWS) -> str:
    """The first rows of a table as a markdown table (long cells cut)."""
    if table.num_columns == 0:
        return "_no columns_"
    head = table.slice(0, rows).to_pylist()

    def cell(value: Any) -> str:
        text = str(value).replace("\n", " ").replace("|", "\\|")
        return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"

    lines = ["| " + " | ".join(table.column_names) + " |", "|" + "---|" * table.num_columns]
    lines += ["| " + " | ".join(cell(row[c]) for c in table.column_names) + " |" for row in head]
    if not head:
        lines.append("| " + " | ".join("" for _ in table.column_names) + " |")
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def compact_column_statistics(analysis: Any) -> dict[str, Any]:
    """Data Designer's column statistics, keyed by column, without histograms."""
    if analysis is None:
        return {}
    stats = {}
    for stat in getattr(analysis, "column_statistics", []) or []:
        data = stat.model_dump(mode="json")
        name = data.pop("column_name", None)
        data.pop("distribution", None)
        stats[name] = _json_safe({k: v for k, v in data.items() if v is not None})
    return stats


def markdown_column_statistics(stats: dict[str, dict[str, Any]]) -> str:
    """Data Designer's column statistics as a markdown table: one row per column, one column per statistic."""
    if not stats:
        return "_no column statistics_"
    fields: list[str] = []
    for values in stats.values():
        fields += [k for k in values if k not in fields]

    def cell(value: Any) -> str:
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, dict | list):
            value = json.dumps(value, default=str)
        text = "" if value is None else str(value).replace("\n", " ").replace("|", "\\|")
        return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"

    lines = ["| column | " + " | ".join(fields) + " |", "|" + "---|" * (len(fields) + 1)]
    lines += [
        f"| {cell(name)} | " + " | ".join(cell(values.get(f)) for f in fields) + " |" for name, values in stats.items()
    ]
    return "\n".join(lines)


def stage_metadata(
    *,
    dataset: StageDataset,
    uri: str,
    builder: DataDesignerConfigBuilder,
    seed: Seed | None,
    record: dict[str, Any],
    column_statistics: dict[str, Any],
    planned_schema: dg.TableSchema | None = None,
) -> dict[str, Any]:
    """Every metadata key of a stage materialization."""
    preview_table = dataset.head(PREVIEW_ROWS)
    return {
        "dagster/row_count": dg.MetadataValue.int(dataset.num_rows),
        "dagster/column_schema": dg.MetadataValue.table_schema(column_schema(dataset.schema, planned_schema)),
        "dagster/column_lineage": dg.MetadataValue.column_lineage(column_lineage(builder, seed, dataset.columns)),
        "dagster/uri": dg.MetadataValue.path(uri),
        "dd_assets/preview": dg.MetadataValue.md(markdown_preview(preview_table)),
        "dd_assets/num_records_requested": dg.MetadataValue.int(record.get("num_records_requested") or 0),
        "dd_assets/num_records_actual": dg.MetadataValue.int(record.get("num_records_actual") or 0),
        "dd_assets/status": dg.MetadataValue.text(record["status"]),
        **model_usage_metadata(record.get("model_usage")),
        # A table in the UI; the same statistics as JSON are in the stage's stage.json ("column_statistics").
        "dd_assets/column_statistics": dg.MetadataValue.md(markdown_column_statistics(column_statistics)),
        "dd_assets/resumed": dg.MetadataValue.bool(bool(record.get("resumed"))),
        "dd_assets/duration_s": dg.MetadataValue.float(round(float(record.get("duration_s") or 0.0), 3)),
    }
