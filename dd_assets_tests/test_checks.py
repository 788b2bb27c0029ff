"""Asset checks on every stage: declared as check_specs, evaluated on each materialization."""

from __future__ import annotations

import dagster as dg
import data_designer.config as dd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dd_assets import DataDesignerResource, Stage, Workflow, build_workflow_definitions
from dd_assets_tests.conftest import TEST_PROVIDER
from dd_assets_tests.helpers import (
    expression_builder,
    failure_message,
    llm_builder,
    materialize,
    metadata_of,
    model_config,
    sampler_builder,
)

pytestmark = pytest.mark.usefixtures("in_both_execution_modes")


def _checks(result: dg.ExecuteInProcessResult, key: list[str]) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey(key)}


def test_every_stage_declares_its_checks():
    wf = Workflow(
        name="chk",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=3),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"]),
            Stage(name="c", config=sampler_builder(), num_records=3, allow_empty=True),
        ],
    )
    defs = build_workflow_definitions(wf)
    specs = {(s.asset_key.path[1], s.name): s for a in defs.assets for s in a.check_specs}
    # non_empty only where an empty output can be published: downstream stages and allow_empty stages
    assert set(specs) == {
        ("a", "completion_rate"),
        ("a", "columns_present"),
        ("b", "non_empty"),
        ("b", "completion_rate"),
        ("b", "columns_present"),
        ("c", "non_empty"),
        ("c", "completion_rate"),
        ("c", "columns_present"),
    }
    # a stage that must not feed downstream stages fails before publishing, so no check needs to block
    assert not any(spec.blocking for spec in specs.values())


def test_non_empty_warns_on_an_empty_published_output(io_manager, instance):
    wf = Workflow(
        name="hollow",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=4, on_success=_no_rows, allow_empty=True),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"]),
        ],
    )
    result = materialize(wf, io_manager, instance)
    for stage in ("a", "b"):
        evaluation = _evaluation(result, ["hollow", stage], "non_empty")
        assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert evaluation.metadata["rows"].value == 0


def _no_rows(artifact_dir):
    import pyarrow.parquet as pq

    table = pq.read_table(artifact_dir / "parquet-files").slice(0, 0)
    target = artifact_dir / "none.parquet"
    pq.write_table(table, target)
    return target


def _evaluation(result: dg.ExecuteInProcessResult, key: list[str], name: str):
    return next(
        e for e in result.get_asset_check_evaluations() if e.check_name == name and e.asset_key == dg.AssetKey(key)
    )


def test_checks_pass_on_a_good_run(io_manager, instance):
    wf = Workflow(
        name="good",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=5),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"]),
        ],
    )
    result = materialize(wf, io_manager, instance)
    assert _checks(result, ["good", "b"]) == {"non_empty": True, "completion_rate": True, "columns_present": True}


def _flaky_resource(llm) -> DataDesignerResource:
    return DataDesignerResource(
        model_providers=[{"name": TEST_PROVIDER, "endpoint": llm.endpoint, "api_key": "DD_ASSETS_TEST_API_KEY"}],
        run_config={"disable_early_shutdown": True, "max_conversation_restarts": 0, "buffer_size": 5},
    )


def _ordered_seed(tmp_path, colors: list[str]) -> dd.DataDesignerConfigBuilder:
    """A root stage reading a fixed seed file in order, so which batch a row lands in is known."""
    import pandas as pd

    path = tmp_path / "colors.parquet"
    pd.DataFrame({"n": list(range(len(colors))), "color": colors}).to_parquet(path)
    return expression_builder("label", "{{ color }}-{{ n }}").with_seed_dataset(dd.LocalFileSeedSource(path=str(path)))


def _blue_fails(prompt: str):
    return (400, {"error": {"message": "bad request"}}) if "blue" in prompt else None


def test_low_completion_rate_fails_before_publishing_and_a_rerun_regenerates_only_short_batches(
    io_manager, instance, llm, tmp_path
):
    colors = ["red"] * 20
    colors[0] = colors[7] = "blue"  # one dropped record in batch 0 and in batch 1 (batches of 5)
    wf = Workflow(
        name="flaky",
        stages=[
            Stage(name="seed", config=_ordered_seed(tmp_path, colors)),
            Stage(name="write", config=llm_builder("text", "Write about {{ color }} {{ n }}"), depends_on=["seed"]),
            Stage(name="after", config=expression_builder("y", "{{ text }}"), depends_on=["write"]),
        ],
    )
    llm.fault = _blue_fails
    result = materialize(wf, io_manager, instance, resource=_flaky_resource(llm), raise_on_error=False)
    message = failure_message(result, "flaky", "write")
    assert "workflow 'flaky', stage 'write': generated 18 of 20 requested records (90.0%)" in message
    assert "below completion_threshold 0.95; nothing was published" in message
    assert io_manager.read_record("flaky", "write") is None
    assert io_manager.read_record("flaky", "after") is None  # the downstream stage never ran

    llm.reset()
    llm.fault = None
    rerun = materialize(wf, io_manager, instance, resource=_flaky_resource(llm))
    assert rerun.success
    # batches 2 and 3 were full and are reused; only batches 0 and 1 (10 records) are requested again
    assert llm.count("generation") == 10
    assert metadata_of(rerun, ["flaky", "write"])["dd_assets/resumed"] is True
    assert io_manager.read_stage("flaky", "write").num_rows == 20
    assert sorted(io_manager.read_stage("flaky", "write").to_pandas()["n"]) == list(range(20))


def test_dropped_records_above_the_threshold_publish_with_a_completion_warning(io_manager, instance, llm, tmp_path):
    llm.fault = _blue_fails
    wf = Workflow(
        name="lenient",
        stages=[
            Stage(name="seed", config=_ordered_seed(tmp_path, ["red", "red", "red", "blue"] * 5)),
            Stage(
                name="write",
                config=llm_builder("text", "Write about {{ color }} {{ n }}"),
                depends_on=["seed"],
                completion_threshold=0.7,
            ),
        ],
    )
    result = materialize(wf, io_manager, instance, resource=_flaky_resource(llm))
    evaluation = _evaluation(result, ["lenient", "write"], "completion_rate")
    assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["dropped"].value == 5 and evaluation.metadata["rate"].value == 0.75
    assert io_manager.read_stage("lenient", "write").num_rows == 15


def test_judge_score_check(io_manager, instance, llm):
    llm.fault = None
    judge = dd.DataDesignerConfigBuilder(model_configs=[model_config()])
    judge.add_column(
        dd.LLMJudgeColumnConfig(
            name="grade",
            model_alias="test-model",
            prompt="Grade {{ color }}",
            scores=[dd.Score(name="quality", description="how good", options={1: "bad", 5: "good"})],
        )
    )

    llm.structured_answer = {"quality": {"reasoning": "fine", "score": 5}}
    wf = Workflow(
        name="judged",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=4),
            Stage(name="grade", config=judge, depends_on=["seed"], min_judge_score=4.0),
        ],
    )
    resource = DataDesignerResource(
        model_providers=[{"name": TEST_PROVIDER, "endpoint": llm.endpoint, "api_key": "DD_ASSETS_TEST_API_KEY"}]
    )
    result = materialize(wf, io_manager, instance, resource=resource, raise_on_error=False)
    checks = _checks(result, ["judged", "grade"])
    assert checks.get("judge_score") is True, (checks, result.success)


def test_judge_score_check_counts_a_labelled_option_by_its_place_in_the_option_list(io_manager, instance, llm):
    # options listed best first, as Data Designer writes its numeric rubrics ({4: ..., 0: ...}): the last label
    # counts 0, the one before it 1, the first len(options) - 1
    roomy = model_config("label-judge").model_copy(
        update={"inference_parameters": dd.ChatCompletionInferenceParams(max_parallel_requests=2, max_tokens=256)}
    )
    judge = dd.DataDesignerConfigBuilder(model_configs=[roomy])
    judge.add_column(
        dd.LLMJudgeColumnConfig(
            name="grade",
            model_alias="label-judge",
            prompt="Grade {{ color }}",
            scores=[
                dd.Score(
                    name="completeness",
                    description="is every part answered",
                    options={"Complete": "every part", "Partial": "some parts", "Incomplete": "none"},
                ),
                dd.Score(name="accuracy", description="is it right", options={"Accurate": "yes", "Inaccurate": "no"}),
            ],
        )
    )
    llm.structured_answer = {
        "completeness": {"reasoning": "most", "score": "Partial"},
        "accuracy": {"reasoning": "right", "score": "Accurate"},
    }
    wf = Workflow(
        name="labelled",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=4),
            Stage(name="grade", config=judge, depends_on=["seed"], min_judge_score=1.0),
        ],
    )
    resource = DataDesignerResource(
        model_providers=[{"name": TEST_PROVIDER, "endpoint": llm.endpoint, "api_key": "DD_ASSETS_TEST_API_KEY"}]
    )
    result = materialize(wf, io_manager, instance, resource=resource, raise_on_error=False)
    evaluation = _evaluation(result, ["labelled", "grade"], "judge_score")
    assert evaluation.metadata["scores"].value == 8 and evaluation.metadata["mean_score"].value == 1.0
    assert evaluation.passed is True
    assert evaluation.metadata["label_values"].value == {
        "grade": {
            "completeness": {"Complete": 2, "Partial": 1, "Incomplete": 0},
            "accuracy": {"Accurate": 1, "Inaccurate": 0},
        }
    }


def test_judge_score_labels_mixed_with_numbers_are_left_out_of_the_mean():
    from dd_assets.run.checks import _scores, label_values

    judge = dd.DataDesignerConfigBuilder(model_configs=[model_config()])
    judge.add_column(
        dd.LLMJudgeColumnConfig(
            name="grade",
            model_alias="test-model",
            prompt="Grade {{ color }}",
            scores=[
                dd.Score(name="mixed", description="d", options={2: "good", 1: "poor", "N/A": "cannot tell"}),
                dd.Score(name="words", description="d", options={"Yes": "y", "No": "n"}),
            ],
        )
    )
    wf = Workflow(
        name="mixed",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=2),
            Stage(name="grade", config=judge, depends_on=["seed"], min_judge_score=1),
        ],
    )
    labels = label_values(wf.stage("grade"))
    assert labels == {"grade": {"words": {"Yes": 1, "No": 0}}}
    cell = {"mixed": {"score": "N/A"}, "words": {"score": "yes"}}
    assert _scores(cell, labels["grade"]) == [1.0]
    assert _scores({"mixed": {"score": "2"}, "words": {"score": "No"}}, labels["grade"]) == [2.0, 0.0]


def test_batches_that_dropped_records_are_not_paid_for_again_above_the_threshold(io_manager, instance, llm, tmp_path):
    from dd_assets_tests.helpers import FailOnce

    llm.fault = _blue_fails
    callback = FailOnce()
    wf = Workflow(
        name="enough",
        stages=[
            Stage(name="seed", config=_ordered_seed(tmp_path, ["red", "red", "red", "blue"] * 5)),
            Stage(
                name="write",
                config=llm_builder("text", "Write about {{ color }} {{ n }}"),
                depends_on=["seed"],
                completion_threshold=0.7,
                on_success=callback,
                on_success_version="1",
            ),
        ],
    )
    assert not materialize(wf, io_manager, instance, resource=_flaky_resource(llm), raise_on_error=False).success
    llm.reset()
    rerun = materialize(
        wf, io_manager, instance, resource=_flaky_resource(llm), selection=[dg.AssetKey(["enough", "write"])]
    )
    assert llm.count("generation") == 0  # 15 of 20 is above 0.7: the finished batches are reused as they are
    assert io_manager.read_stage("enough", "write").num_rows == 15
    assert metadata_of(rerun, ["enough", "write"])["dd_assets/resumed"] is True


def _whole_table_columns_check(files, names):
    """The columns_present computation as it was: every file read into one table."""
    table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    missing = [n for n in names if n not in table.column_names]
    all_null = [
        n for n in names if n in table.column_names and table.num_rows and table.column(n).null_count == table.num_rows
    ]
    return missing, all_null


def _column_files(tmp_path) -> list:
    files = []
    tables = [
        pa.table(
            {
                "full": ["a", "b", "c"],
                "some": ["x", None, "z"],
                "none": pa.array([None, None, None], pa.string()),
                "nested": pa.array([None, None, None], pa.struct([("k", pa.int64())])),
                "listed": pa.array([[1], None, []], pa.list_(pa.int64())),
                "void": pa.nulls(3),
                "half": ["only", "here", "!"],
            }
        ),
        pa.table(
            {
                "full": ["d", "e"],
                "some": pa.array([None, None], pa.string()),
                "none": pa.array([None, None], pa.string()),
                "nested": pa.array([None, None], pa.struct([("k", pa.int64())])),
                "listed": pa.array([None, None], pa.list_(pa.int64())),
                "void": pa.nulls(2),
            }
        ),
    ]
    for index, table in enumerate(tables):
        for stats in (True, False):
            path = tmp_path / f"part-{index}-{stats}.parquet"
            pq.write_table(table, path, write_statistics=stats, row_group_size=2)
            files.append(path)
    return files


@pytest.mark.parametrize("subset", ["all", "with_statistics", "without_statistics", "second_only"])
def test_columns_present_from_parquet_statistics_equals_the_whole_table_computation(tmp_path, subset):
    from dd_assets.run.checks import missing_and_all_null_columns

    files = _column_files(tmp_path)
    chosen = {
        "all": files,
        "with_statistics": [f for f in files if f.name.endswith("True.parquet")],
        "without_statistics": [f for f in files if f.name.endswith("False.parquet")],
        "second_only": [f for f in files if f.name.startswith("part-1")],
    }[subset]
    names = ["full", "some", "none", "nested", "listed", "void", "half", "absent"]
    assert missing_and_all_null_columns(chosen, names) == _whole_table_columns_check(chosen, names)


_MEMORY_PROBE = """
import sys
import pyarrow as pa, pyarrow.parquet as pq
from dd_assets.run.checks import missing_and_all_null_columns
files = sys.argv[2:]
before = pa.default_memory_pool().max_memory()
result = missing_and_all_null_columns(files, ["big", "other"])
print(result, pa.default_memory_pool().max_memory() - before)
"""


@pytest.mark.parametrize("statistics", [True, False], ids=["statistics", "column_wise"])
def test_columns_present_does_not_read_whole_tables(tmp_path, statistics):
    import subprocess
    import sys

    rows, width = 20_000, 1_000  # 20 MB of text per file once decoded, a few kB on disk
    table = pa.table({"big": [f"{i:08d}" + "x" * width for i in range(rows)], "other": pa.nulls(rows, pa.string())})
    files = []
    for index in range(3):
        path = tmp_path / f"big-{index}.parquet"
        pq.write_table(table, path, write_statistics=statistics, row_group_size=rows // 20)
        files.append(str(path))
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, "--", *files], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result, peak = proc.stdout.rsplit(" ", 1)
    assert result == "([], ['other'])"
    # reading the whole dataset takes over 60 MB of Arrow memory; one column of one row group is 1 MB
    assert int(peak) < (1 << 20 if statistics else 10 << 20), int(peak)
