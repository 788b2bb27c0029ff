"""Every materialization carries Dagster's standard metadata and the dd_assets/* keys."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import data_designer.config as dd

from dd_assets import Stage, Workflow
from dd_assets_tests.helpers import expression_builder, materialize, metadata_of, sampler_builder

EXPECTED_KEYS = {
    "dagster/row_count",
    "dagster/column_schema",
    "dagster/column_lineage",
    "dagster/uri",
    "dd_assets/preview",
    "dd_assets/num_records_requested",
    "dd_assets/num_records_actual",
    "dd_assets/status",
    "dd_assets/column_statistics",
    "dd_assets/resumed",
    "dd_assets/duration_s",
}


def _workflow() -> Workflow:
    mid = expression_builder("label", "{{ color }}-{{ n }}")
    mid.add_column(dd.ExpressionColumnConfig(name="shout", expr="{{ label | upper }}"))
    return Workflow(
        name="meta",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=12),
            Stage(name="b", config=mid, depends_on=["a"]),
        ],
    )


def test_every_metadata_key_is_present(io_manager, instance):
    result = materialize(_workflow(), io_manager, instance)
    for stage in ("a", "b"):
        assert EXPECTED_KEYS <= set(metadata_of(result, ["meta", stage]))
    meta = metadata_of(result, ["meta", "b"])
    assert meta["dagster/row_count"] == 12
    assert [c.name for c in meta["dagster/column_schema"].columns] == ["n", "color", "label", "shout"]
    version = io_manager.read_record("meta", "b")["version"]
    assert meta["dagster/uri"] == str(Path(io_manager.base_dir) / "meta" / "b" / "versions" / version)
    assert meta["dd_assets/version"] == version
    assert meta["dd_assets/preview"].startswith("| n | color | label | shout |")
    assert meta["dd_assets/num_records_actual"] == 12
    assert meta["dd_assets/status"] == "completed"
    assert meta["dd_assets/resumed"] is False
    assert meta["dd_assets/duration_s"] > 0
    # a markdown table in the UI, the same statistics as JSON in stage.json
    assert io_manager.read_record("meta", "b")["column_statistics"]["label"]["num_records"] == 12
    table = meta["dd_assets/column_statistics"].splitlines()
    assert table[0].startswith("| column | ") and "num_records" in table[0].split(" | ")
    label_row = next(line for line in table if line.startswith("| label |"))
    assert label_row.split(" | ")[table[0].split(" | ").index("num_records")] == "12"


def test_column_lineage_follows_templates_to_upstream_columns(io_manager, instance):
    result = materialize(_workflow(), io_manager, instance)
    lineage = metadata_of(result, ["meta", "b"])["dagster/column_lineage"].deps_by_column
    upstream = dg.AssetKey(["meta", "a"])

    def deps(column):
        return {(d.asset_key, d.column_name) for d in lineage[column]}

    assert deps("n") == {(upstream, "n")}
    assert deps("color") == {(upstream, "color")}
    assert deps("label") == {(upstream, "n"), (upstream, "color")}
    assert deps("shout") == {(upstream, "n"), (upstream, "color")}  # through label
    root = metadata_of(result, ["meta", "a"])["dagster/column_lineage"].deps_by_column
    assert root == {}


def test_data_version_is_the_hash_of_the_output_and_recorded(io_manager, instance):
    result = materialize(_workflow(), io_manager, instance)
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(["meta", "b"]))
    record = io_manager.read_record("meta", "b")
    assert event.materialization.tags["dagster/data_version"] == record["data_version"]
    assert event.materialization.tags["dagster/code_version"] == record["code_version"]
    assert record["upstream"]["a"]["data_version"] == io_manager.read_record("meta", "a")["data_version"]
    again = materialize(_workflow(), io_manager, instance)
    event2 = next(e for e in again.get_asset_materialization_events() if e.asset_key == dg.AssetKey(["meta", "b"]))
    assert event2.materialization.tags["dagster/data_version"] != event.materialization.tags["dagster/data_version"]


def test_stage_record_layout(io_manager, instance):
    materialize(_workflow(), io_manager, instance)
    stage_dir = Path(io_manager.base_dir) / "meta" / "b"
    record = json.loads((stage_dir / "stage.json").read_text())
    assert {
        "status",
        "code_version",
        "data_version",
        "num_records_requested",
        "num_records_actual",
        "output_rows",
        "upstream",
        "files",
        "run_id",
        "materialized_at",
    } <= set(record)
    assert all(
        (stage_dir / f).is_file() and f.startswith(f"versions/{record['version']}/") and f.endswith(".parquet")
        for f in record["files"]
    )
    for artifact in ("parquet-files", "metadata.json", "builder_config.json"):
        assert (stage_dir / "artifacts" / artifact).exists(), artifact


def test_data_designer_progress_reaches_the_event_log(io_manager, instance):
    result = materialize(_workflow(), io_manager, instance)
    messages = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    assert any(m.startswith("[meta/b]") and "Creating Data Designer dataset" in m for m in messages)
