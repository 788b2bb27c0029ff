"""Asset checks of every stage, declared as ``check_specs`` of the stage asset.

Two guards are not checks, because they stop a stage *before* it publishes: an empty output fails the
stage unless ``allow_empty``, and fewer than ``Stage.completion_threshold`` of the requested records fails
it (the previous output stays). The checks report on what was published:

==================  ========  =====================================================================
check               severity  passes when
==================  ========  =====================================================================
``non_empty``       warn      the output has rows (declared on stages that can publish an empty
                              output: ``allow_empty=True``, or downstream of another stage)
``completion_rate`` warn      every requested record was generated (it warns when some were dropped
                              but the stage stayed above its completion threshold)
``columns_present`` error     every column the stage generates is in its generated data and not all null
``judge_score``     error     the mean score of its ``llm-judge`` columns >= ``Stage.min_judge_score``
                              (declared only when that is set and the stage has judge columns)
==================  ========  =====================================================================

A judge score counts as its number when its options are numbers (``{4: ..., 0: ...}``, also quoted). A score
whose options are labels (``{"Complete": ..., "Partial": ..., "Incomplete": ...}``) counts each label by its place
in the option list, read best first as Data Designer writes its numeric rubrics: the last option 0, the one before
it 1, the first ``len(options) - 1``. Where numbers and labels are mixed (``{2: ..., 1: ..., "N/A": ...}``) the
labels count for nothing and are left out of the mean. The check's ``label_values`` metadata shows the numbers used.

None of them is blocking: a stage that should not feed downstream stages fails before publishing.
Stages that made no generation (``skipped_empty_upstream``, ``overridden``) pass the generation checks with
their status in the check metadata.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
from data_designer.config.processors import DropColumnsProcessorConfig

from dd_assets.spec.workflow import Stage

NON_EMPTY = "non_empty"
COMPLETION_RATE = "completion_rate"
COLUMNS_PRESENT = "columns_present"
JUDGE_SCORE = "judge_score"
GENERATED_STATUSES = {"completed", "completed_empty"}


def judge_columns(stage: Stage) -> list[str]:
    """Names of the stage's ``llm-judge`` columns."""
    return [c.name for c in stage.builder.get_column_configs() if str(c.column_type) in ("llm-judge", "llm_judge")]


def declares_non_empty(stage: Stage) -> bool:
    """Whether the stage can publish an empty output, so that ``non_empty`` can fail."""
    return stage.allow_empty or bool(stage.depends_on)


def check_specs(asset_key: dg.AssetKey, stage: Stage) -> list[dg.AssetCheckSpec]:
    """The checks declared for one stage asset."""
    specs = []
    if declares_non_empty(stage):
        specs.append(dg.AssetCheckSpec(NON_EMPTY, asset=asset_key, description="The output has rows."))
    specs.append(
        dg.AssetCheckSpec(
            COMPLETION_RATE,
            asset=asset_key,
            description=(
                "Every requested record was generated (warns when some were dropped; below "
                f"{stage.completion_threshold} the stage fails before publishing)."
            ),
        )
    )
    specs.append(
        dg.AssetCheckSpec(
            COLUMNS_PRESENT, asset=asset_key, description="Every generated column is present and not entirely null."
        )
    )
    if stage.min_judge_score is not None and judge_columns(stage):
        specs.append(
            dg.AssetCheckSpec(JUDGE_SCORE, asset=asset_key, description=f"Mean judge score >= {stage.min_judge_score}.")
        )
    return specs


def generated_column_names(stage: Stage) -> list[str]:
    """Columns the stage's config generates and keeps in its generated data."""
    dropped = set()
    for processor in stage.builder.get_processor_configs():
        if isinstance(processor, DropColumnsProcessorConfig):
            dropped |= set(processor.column_names)
    return [c.name for c in stage.builder.get_column_configs() if not c.drop and c.name not in dropped]


def missing_and_all_null_columns(files: list[Path], names: list[str]) -> tuple[list[str], list[str]]:
    """Of ``names``: those in none of the parquet ``files``, and those null in every row of them all (a file
    without the column counts its rows as null, as a permissive concat would).

    Null counts come from the row groups' statistics; a row group without them (or a nested column) is read for
    that one column only, so memory stays bounded by one column of one row group at any dataset size.
    """
    present: set[str] = set()
    nulls = dict.fromkeys(names, 0)
    rows = 0
    for file in files:
        parquet = pq.ParquetFile(file)
        meta = parquet.metadata
        rows += meta.num_rows
        columns = set(parquet.schema_arrow.names)
        for name in names:
            if name in columns:
                present.add(name)
                nulls[name] += _null_count(parquet, name)
            else:
                nulls[name] += meta.num_rows
    missing = [name for name in names if name not in present]
    all_null = [name for name in names if name in present and rows and nulls[name] == rows]
    return missing, all_null


def _null_count(parquet: pq.ParquetFile, name: str) -> int:
    meta = parquet.metadata
    # a top-level primitive column is one leaf with the same path; its chunk statistics count its nulls
    leaf = next(
        (
            i
            for i in range(meta.num_columns)
            if meta.schema.column(i).path == name
            and meta.schema.column(i).max_repetition_level == 0
            and meta.schema.column(i).max_definition_level <= 1
        ),
        None,
    )
    total = 0
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(leaf).statistics if leaf is not None else None
        if stats is not None and stats.has_null_count:
            total += stats.null_count
        else:
            total += parquet.read_row_group(group, columns=[name]).column(0).null_count
    return total


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def label_values(stage: Stage) -> dict[str, dict[str, dict[str, int]]]:
    """The number each option label counts as, by judge column and score: only scores whose options are all labels.

    Options are read best first (the last one counts 0), as Data Designer writes its numeric rubrics.
    """
    found: dict[str, dict[str, dict[str, int]]] = {}
    for column in stage.builder.get_column_configs():
        if column.name not in judge_columns(stage):
            continue
        for score in getattr(column, "scores", None) or []:
            labels = list(score.options)
            if labels and all(_number(label) is None for label in labels):
                ranks = {str(label): len(labels) - 1 - place for place, label in enumerate(labels)}
                found.setdefault(column.name, {})[score.name] = ranks
    return found


def _scores(value: Any, labels: dict[str, dict[str, int]]) -> list[float]:
    """The numbers of one judge cell: its scores by name, each a number or a label of ``labels[score name]``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    found = []
    if isinstance(value, dict):
        for name, item in value.items():
            score = item.get("score") if isinstance(item, dict) else None
            number = _number(score)
            if number is None and isinstance(score, str) and name in labels:
                ranks = {label.casefold(): rank for label, rank in labels[name].items()}
                number = ranks.get(score.strip().casefold())
            if number is not None:
                found.append(float(number))
    return found


def check_results(
    stage: Stage, record: dict[str, Any], output_rows: int, generated_files: list[Path], asset_key: dg.AssetKey
) -> list[dg.AssetCheckResult]:
    """Evaluate the declared checks of a finished stage run."""
    status = record["status"]
    generated = status in GENERATED_STATUSES
    results = []
    if declares_non_empty(stage):
        results.append(
            dg.AssetCheckResult(
                asset_key=asset_key,
                check_name=NON_EMPTY,
                passed=output_rows > 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"rows": output_rows, "status": status},
            )
        )

    requested = record.get("num_records_requested") or 0
    actual = record.get("num_records_actual") or 0
    rate = actual / requested if requested else 1.0
    results.append(
        dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=COMPLETION_RATE,
            passed=(actual >= requested) if generated else True,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "rate": round(rate, 4),
                "requested": requested,
                "generated": actual,
                "dropped": max(0, requested - actual) if generated else 0,
                "threshold": stage.completion_threshold,
                "status": status,
            },
        )
    )

    expected = generated_column_names(stage)
    missing, all_null = [], []
    if generated and generated_files:
        missing, all_null = missing_and_all_null_columns(generated_files, expected)
    results.append(
        dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=COLUMNS_PRESENT,
            passed=not missing and not all_null,
            metadata={"expected": expected, "missing": missing, "all_null": all_null, "status": status},
        )
    )

    if stage.min_judge_score is not None and judge_columns(stage):
        scores: list[float] = []
        labelled = label_values(stage)
        if generated and generated_files:
            for file in generated_files:
                present = set(pq.read_schema(file).names)
                table = pq.read_table(file, columns=[c for c in judge_columns(stage) if c in present])
                for name in table.column_names:
                    for value in table.column(name).to_pylist():
                        scores.extend(_scores(value, labelled.get(name, {})))
        mean = sum(scores) / len(scores) if scores else None
        shown = {"label_values": labelled} if labelled else {}
        results.append(
            dg.AssetCheckResult(
                asset_key=asset_key,
                check_name=JUDGE_SCORE,
                passed=(mean is not None and mean >= stage.min_judge_score) if generated else True,
                metadata={"mean_score": mean, "scores": len(scores), "minimum": stage.min_judge_score, **shown},
            )
        )
    return results


def safe_check_results(
    stage: Stage, record: dict[str, Any], output_rows: int, generated_files: list[Path], asset_key: dg.AssetKey
) -> list[dg.AssetCheckResult]:
    """:func:`check_results`, where an error evaluating a check fails that check instead of the stage run."""
    try:
        return check_results(stage, record, output_rows, generated_files, asset_key)
    except Exception as exc:
        names = [s.name for s in check_specs(dg.AssetKey(["_"]), stage)]
        return [
            dg.AssetCheckResult(
                asset_key=asset_key, check_name=name, passed=False, metadata={"error": f"{type(exc).__name__}: {exc}"}
            )
            for name in names
        ]
