"""Recipe-shaped workflows (``fixtures/recipes.py``, shaped like Data Designer's published recipes, our own configs)
materialized through the real ``dagster asset materialize`` CLI against the suite's test server, and compared with
Data Designer's own ``CompositeWorkflow`` on the same stages: rows, columns and Arrow types of every stage output,
and the values that do not depend on random sampling."""

from __future__ import annotations

import ast
import csv
import re
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import data_designer.config as dd
import pyarrow as pa
import pyarrow.parquet as pq
from data_designer.interface import DataDesigner

from dd_assets import StageParquetIOManager
from dd_assets_tests.cli_runs import BIN
from dd_assets_tests.conftest import TEST_API_KEY_ENV, cli_environment
from dd_assets_tests.fixtures.recipes import PROVIDER, SEED_ROWS, ProductFacts, recipe_stages, to_composite

REPO = Path(__file__).resolve().parents[1]
PROJECT = Path(__file__).parent / "fixtures" / "recipes_project.py"
ROWS = 6


def _seed_csv(tmp_path: Path) -> Path:
    from dd_assets_tests.fixtures.recipes import write_patient_seed

    return write_patient_seed(tmp_path / "visits.csv")


def _materialize_from_the_cli(tmp_path: Path, llm, workflow: str, seed: Path) -> StageParquetIOManager:
    """``dagster asset materialize --select group:<workflow>`` on the recipes project; its published stages."""
    env = cli_environment(
        tmp_path,
        PYTHONPATH=str(REPO),
        DD_ASSETS_TEST_ENDPOINT=llm.endpoint,
        DD_ASSETS_TEST_KEY="sk-recipes-test-key",
        DD_ASSETS_TEST_RECIPE_SEED=str(seed),
        DD_ASSETS_TEST_ROWS=str(ROWS),
    )
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-f", str(PROJECT), "--select", f"group:{workflow}"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "RUN_SUCCESS" in proc.stderr, proc.stderr[-4000:]
    return StageParquetIOManager(base_dir=str(tmp_path / "data"))


def _composite_outputs(tmp_path: Path, llm, workflow: str, seed: Path) -> dict[str, pa.Table]:
    """Each stage's handed-on output from Data Designer's own ``CompositeWorkflow`` against the same server."""
    data_designer = DataDesigner(
        artifact_path=tmp_path / "composite",
        model_providers=[dd.ModelProvider(name=PROVIDER, endpoint=llm.endpoint, api_key=TEST_API_KEY_ENV)],
    )
    stages = recipe_stages(workflow, num_records=ROWS, seed_csv=str(seed))
    results = to_composite(data_designer, workflow, stages).run()
    return {s["name"]: pq.read_table(results.get_stage_output_path(s["name"])) for s in stages}


def _types(table: pa.Table) -> dict[str, pa.DataType]:
    return {field.name: field.type for field in table.schema}


def _assert_same_shape(ours: StageParquetIOManager, workflow: str, theirs: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Every stage: the same row count, column names and Arrow types as CompositeWorkflow's; our tables by stage."""
    published = {}
    for stage, their_table in theirs.items():
        table = ours.read_stage(workflow, stage).to_arrow()
        assert table.num_rows == their_table.num_rows == ROWS, (stage, table.num_rows, their_table.num_rows)
        # Data Designer's async engine orders columns by cell completion, so compare them as sets
        assert sorted(table.column_names) == sorted(their_table.column_names), stage
        assert _types(table) == _types(their_table), stage
        published[stage] = table
    return published


def test_a_product_qa_recipe_with_a_judge_and_a_processor_only_export_matches_composite_workflow(tmp_path, llm):
    seed = _seed_csv(tmp_path)
    ours = _materialize_from_the_cli(tmp_path, llm, "product_qa", seed)
    tables = _assert_same_shape(ours, "product_qa", _composite_outputs(tmp_path, llm, "product_qa", seed))

    products = tables["products"].to_pylist()
    for row in products:  # the structured column holds objects of the requested schema
        ProductFacts.model_validate(row["product_info"])
    assert {type(row["list_price"]) for row in products} == {float}
    qa = tables["qa"].to_pylist()
    for row in qa:  # the judge picked one of each score's labels, and the expressions read them
        grade = row["answer_grade"]
        assert grade["Completeness"]["score"] in {"Complete", "Partial", "Incomplete"}
        assert grade["Accuracy"]["score"] in {"Accurate", "Inaccurate"}
        assert (row["completeness"], row["accuracy"]) == (grade["Completeness"]["score"], grade["Accuracy"]["score"])
    # the processor-only export hands on its processor's schema: one chat record per Q&A row, in order
    export = tables["export"]
    assert export.column_names == ["user", "assistant", "grade", "product"]
    assert export.to_pylist() == [
        {
            "user": row["question"],
            "assistant": row["answer"],
            "grade": f"{row['completeness']}/{row['accuracy']}",
            "product": row["product_info"]["product_name"],
        }
        for row in qa
    ]


def test_a_text_to_python_recipe_with_a_code_validator_a_judge_and_dropped_columns_matches_composite_workflow(
    tmp_path, llm
):
    seed = _seed_csv(tmp_path)
    ours = _materialize_from_the_cli(tmp_path, llm, "text_to_python", seed)
    tables = _assert_same_shape(ours, "text_to_python", _composite_outputs(tmp_path, llm, "text_to_python", seed))

    assert {"opening", "concept"} <= set(tables["tasks"].column_names)
    code = tables["code"]
    assert not {"opening", "concept"} & set(code.column_names)  # the drop-columns output processor ran
    assert {"sector", "topic", "level", "instruction", "solution", "solution_grade", "solution_check"} == set(
        code.column_names
    )
    for row in code.to_pylist():
        ast.parse(row["solution"])  # the code column holds the fenced block's code, without the fence
        assert row["solution_check"]["is_valid"] is True  # Data Designer's offline Python validator (ruff) passed it
        assert row["solution_check"]["python_linter_score"] == 10.0
        assert row["solution_grade"]["Relevance"]["score"] in {0, 1, 2, 3, 4}
        assert row["solution_grade"]["Readability"]["score"] in {0, 2, 4}
    assert pa.types.is_integer(code.schema.field("solution_grade").type.field("Relevance").type.field("score").type)


def test_a_csv_seeded_recipe_with_faker_uuid_and_datetime_samplers_and_a_cleanup_stage_matches_composite_workflow(
    tmp_path, llm
):
    seed = _seed_csv(tmp_path)
    ours = _materialize_from_the_cli(tmp_path, llm, "patient_notes", seed)
    theirs = _composite_outputs(tmp_path, llm, "patient_notes", seed)
    tables = _assert_same_shape(ours, "patient_notes", theirs)

    with seed.open() as handle:
        rows = [(r["diagnosis"], r["patient_summary"]) for r in csv.DictReader(handle)]
    assert rows == SEED_ROWS
    # the values that do not depend on sampling: the seed rows in order, and the LLM column made from them only
    for stage in ("visits", "cleanup"):
        for column in ("diagnosis", "patient_summary", "triage"):
            assert tables[stage].column(column).to_pylist() == theirs[stage].column(column).to_pylist(), (stage, column)
        assert [(r["diagnosis"], r["patient_summary"]) for r in tables[stage].to_pylist()] == rows

    visits = tables["visits"].to_pylist()
    for row in visits:
        assert re.fullmatch(r"PT-[0-9A-F]{8}", row["patient_id"])
        assert row["first_name"] == row["patient"]["first_name"] and row["physician"].startswith("Dr. ")
        onset, visit = datetime.fromisoformat(row["onset"]), datetime.fromisoformat(row["visit"])
        assert timedelta(days=1) <= visit - onset <= timedelta(days=21)
        assert datetime(2024, 1, 1) <= onset <= datetime(2024, 12, 31)
    assert len({row["patient_id"] for row in visits}) == ROWS
    # the processor-only cleanup drops the person objects and keeps everything else, row for row
    cleanup = tables["cleanup"]
    assert set(cleanup.column_names) == set(tables["visits"].column_names) - {"patient", "doctor"}
    assert cleanup.to_pylist() == [{k: v for k, v in row.items() if k not in ("patient", "doctor")} for row in visits]
