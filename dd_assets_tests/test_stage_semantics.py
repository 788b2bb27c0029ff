"""Stage semantics of DESIGN.md, materialized with dg.materialize on a real instance and real Data Designer."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import data_designer.config as dd
import pandas as pd
import pyarrow as pa
import pytest

from dd_assets import Stage, StageDataset, Workflow, WorkflowDefinitionError
from dd_assets_tests.helpers import (
    FailOnce,
    expression_builder,
    failure_message,
    llm_builder,
    materialize,
    metadata_of,
    sampler_builder,
)

pytestmark = pytest.mark.usefixtures("in_both_execution_modes")


def _read(io_manager, workflow: str, stage: str) -> pd.DataFrame:
    return io_manager.read_stage(workflow, stage).to_pandas()


def test_single_upstream_seeds_rows_and_defaults_num_records_to_seed_count(io_manager, instance):
    wf = Workflow(
        name="lin",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=23),
            Stage(name="b", config=expression_builder("label", "{{ color }}-{{ n }}"), depends_on=["a"]),
        ],
    )
    result = materialize(wf, io_manager, instance)
    assert result.success
    a, b = _read(io_manager, "lin", "a"), _read(io_manager, "lin", "b")
    assert len(a) == len(b) == 23
    assert list(b["n"]) == list(a["n"])  # ordered sampling keeps row order
    assert list(b["label"]) == [f"{c}-{n}" for c, n in zip(a["color"], a["n"], strict=True)]
    assert metadata_of(result, ["lin", "b"])["dd_assets/num_records_requested"] == 23


def test_run_config_num_records_beats_stage_num_records(io_manager, instance):
    wf = Workflow(name="rc", stages=[Stage(name="a", config=sampler_builder(), num_records=30)])
    result = materialize(wf, io_manager, instance, run_config={"ops": {"rc__a": {"config": {"num_records": 7}}}})
    assert len(_read(io_manager, "rc", "a")) == 7
    assert metadata_of(result, ["rc", "a"])["dd_assets/num_records_requested"] == 7


def test_stage_num_records_beats_seed_count(io_manager, instance):
    wf = Workflow(
        name="sn",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=20),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"], num_records=5),
        ],
    )
    materialize(wf, io_manager, instance)
    a, b = _read(io_manager, "sn", "a"), _read(io_manager, "sn", "b")
    assert list(b["n"]) == list(a["n"][:5])


def test_root_without_num_records_uses_data_designer_default(io_manager, instance):
    from data_designer.config.utils.constants import DEFAULT_NUM_RECORDS

    materialize(Workflow(name="dflt", stages=[Stage(name="a", config=sampler_builder())]), io_manager, instance)
    assert len(_read(io_manager, "dflt", "a")) == DEFAULT_NUM_RECORDS


def test_selection_strategy_selects_upstream_rows(io_manager, instance):
    wf = Workflow(
        name="sel",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=20),
            Stage(
                name="b",
                config=expression_builder("x", "{{ n }}"),
                depends_on=["a"],
                num_records=5,
                selection_strategy=dd.IndexRange(start=2, end=6),
            ),
        ],
    )
    materialize(wf, io_manager, instance)
    a, b = _read(io_manager, "sel", "a"), _read(io_manager, "sel", "b")
    assert list(b["n"]) == list(a["n"][2:7])


def test_shuffle_sampling_draws_every_upstream_row_once_in_another_order(io_manager, instance):
    wf = Workflow(
        name="shuf",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=40),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"], sampling_strategy="shuffle"),
        ],
    )
    materialize(wf, io_manager, instance)
    a, b = _read(io_manager, "shuf", "a"), _read(io_manager, "shuf", "b")
    # every upstream row drawn once, in another order (40 rows keep their order by chance once in 40!)
    assert sorted(zip(b["n"], b["color"], strict=True)) == sorted(zip(a["n"], a["color"], strict=True))
    assert list(b["n"]) != list(a["n"])
    ordered = Workflow(
        name="shuf",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=40),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"]),
        ],
    )
    materialize(ordered, io_manager, instance, selection=[dg.AssetKey(["shuf", "b"])])  # ordered: upstream order
    assert list(_read(io_manager, "shuf", "b")["n"]) == list(a["n"])


def test_concat_appends_rows_in_depends_on_order_with_column_union(io_manager, instance):
    extra = sampler_builder()
    extra.add_column(dd.ExpressionColumnConfig(name="only_c", expr="c{{ n }}"))
    wf = Workflow(
        name="cat",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=10),
            Stage(name="c", config=extra, num_records=15),
            Stage(name="d", config=expression_builder("x", "{{ color }}"), depends_on=["c", "a"], combine="concat"),
        ],
    )
    result = materialize(wf, io_manager, instance)
    a, c, d = (_read(io_manager, "cat", s) for s in "acd")
    assert len(d) == 25
    assert list(d["n"]) == list(c["n"]) + list(a["n"])
    assert d["only_c"].isna().sum() == 10
    assert metadata_of(result, ["cat", "d"])["dd_assets/num_records_requested"] == 25


def _branch_workflow(name: str, *, b_records=None, c_expr="{{ color | upper }}", c_column="upper", combine="zip"):
    return Workflow(
        name=name,
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=12),
            Stage(
                name="b",
                config=expression_builder("label", "{{ color }}-{{ n }}"),
                depends_on=["a"],
                num_records=b_records,
            ),
            Stage(name="c", config=expression_builder(c_column, c_expr), depends_on=["a"]),
            Stage(
                name="d",
                config=expression_builder("both", "{{ label }}/{{ upper }}"),
                depends_on=["b", "c"],
                combine=combine,
            ),
        ],
    )


def test_zip_puts_rows_side_by_side_and_keeps_shared_columns_once(io_manager, instance):
    result = materialize(_branch_workflow("zipok"), io_manager, instance)
    assert result.success
    a, d = _read(io_manager, "zipok", "a"), _read(io_manager, "zipok", "d")
    assert list(d.columns).count("n") == 1
    assert list(d["n"]) == list(a["n"])
    assert list(d["both"]) == [f"{c}-{n}/{c.upper()}" for c, n in zip(a["color"], a["n"], strict=True)]


def test_zip_with_different_row_counts_fails_clearly(io_manager, instance):
    result = materialize(_branch_workflow("zipbad", b_records=5), io_manager, instance, raise_on_error=False)
    assert not result.success
    failure = failure_message(result, "zipbad", "d")
    assert "workflow 'zipbad', stage 'd'" in failure and "field 'combine'" in failure and "b=5, c=12" in failure


def test_zip_with_overlapping_generated_columns_fails_at_load_time():
    with pytest.raises(WorkflowDefinitionError, match="stage 'd', field 'combine': zip upstreams 'b' and 'c'"):
        _branch_workflow("zipovl", c_expr="{{ n }}", c_column="label")


def _parquet_files_dir(artifact_dir: Path) -> Path:
    return artifact_dir / "parquet-files"


def test_zip_overlap_unknown_at_load_time_fails_at_run_time(io_manager, instance):
    wf = Workflow(
        name="zipovl2",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=12),
            Stage(name="b", config=expression_builder("label", "{{ color }}-{{ n }}"), depends_on=["a"]),
            Stage(
                name="c",
                config=expression_builder("label", "{{ n }}"),
                depends_on=["a"],
                on_success=_parquet_files_dir,  # columns not knowable at load time
            ),
            Stage(name="d", config=expression_builder("x", "{{ label }}"), depends_on=["b", "c"], combine="zip"),
        ],
    )
    result = materialize(wf, io_manager, instance, raise_on_error=False)
    failure = failure_message(result, "zipovl2", "d")
    assert "both have column 'label' with different values" in failure


def test_callable_combine_gets_stage_datasets(io_manager, instance):
    seen = {}

    def first_rows(upstreams: dict[str, StageDataset]) -> pd.DataFrame:
        seen.update({k: (type(v).__name__, v.num_rows) for k, v in upstreams.items()})
        return pd.concat([ds.to_pandas().head(3) for ds in upstreams.values()], ignore_index=True)

    wf = _branch_workflow("call", combine=first_rows, c_column="label", c_expr="{{ n }}")
    wf = Workflow(
        name="call",
        stages=[
            *wf.stages[:3],
            Stage(name="d", config=expression_builder("y", "{{ label }}"), depends_on=["b", "c"], combine=first_rows),
        ],
    )
    materialize(wf, io_manager, instance)
    assert seen == {"b": ("StageDataset", 12), "c": ("StageDataset", 12)}
    assert len(_read(io_manager, "call", "d")) == 6


def test_external_asset_upstream_is_loaded_through_its_own_io_manager(io_manager, instance):
    @dg.asset(key=["raw", "docs"])
    def raw_docs() -> pd.DataFrame:
        return pd.DataFrame({"text": ["alpha", "beta", "gamma"]})

    wf = Workflow(
        name="ext",
        stages=[
            Stage(
                name="up",
                config=expression_builder("upper", "{{ text | upper }}"),
                depends_on=[dg.AssetKey(["raw", "docs"])],
            )
        ],
    )
    result = materialize(wf, io_manager, instance, extra_assets=[raw_docs])
    assert result.success
    assert list(_read(io_manager, "ext", "up")["upper"]) == ["ALPHA", "BETA", "GAMMA"]
    lineage = metadata_of(result, ["ext", "up"])["dagster/column_lineage"]
    assert [d.asset_key for d in lineage.deps_by_column["upper"]] == [dg.AssetKey(["raw", "docs"])]


def test_output_override_replaces_output_without_generation(io_manager, instance, tmp_path):
    override = tmp_path / "fixed.parquet"
    pd.DataFrame({"n": [1, 2, 3], "color": ["red", "red", "blue"]}).to_parquet(override)
    wf = Workflow(
        name="ovr",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=50),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"]),
        ],
    )
    result = materialize(
        wf, io_manager, instance, run_config={"ops": {"ovr__a": {"config": {"output_override": str(override)}}}}
    )
    assert metadata_of(result, ["ovr", "a"])["dd_assets/status"] == "overridden"
    assert list(_read(io_manager, "ovr", "b")["x"]) == ["1", "2", "3"]


def test_output_processors_run_on_the_stage_output(io_manager, instance):
    wf = Workflow(
        name="outp",
        stages=[
            Stage(
                name="a",
                config=sampler_builder(),
                num_records=8,
                output_processors=[dd.DropColumnsProcessorConfig(name="drop_color", column_names=["color"])],
            )
        ],
    )
    materialize(wf, io_manager, instance)
    assert list(_read(io_manager, "outp", "a").columns) == ["n"]
    artifacts = Path(io_manager.stage_dir("outp", "a").path) / "artifacts"
    assert (artifacts / "output-processors" / "parquet-files").is_dir()
    assert "color" in pd.read_parquet(artifacts / "parquet-files").columns  # the main output is kept as an artifact


def test_processor_output_is_selected(io_manager, instance):
    builder = sampler_builder()
    builder.add_processor(dd.SchemaTransformProcessorConfig(name="pairs", template={"pair": "{{ color }}:{{ n }}"}))
    wf = Workflow(name="procout", stages=[Stage(name="a", config=builder, num_records=6, output="processor:pairs")])
    materialize(wf, io_manager, instance)
    out = _read(io_manager, "procout", "a")
    assert list(out.columns) == ["pair"] and len(out) == 6


def test_processor_only_stage_with_output_processor_selection(io_manager, instance):
    chatml = dd.DataDesignerConfigBuilder().add_processor(
        dd.SchemaTransformProcessorConfig(
            name="chatml", template={"messages": [{"role": "user", "content": "{{ color }}"}]}
        )
    )
    wf = Workflow(
        name="ponly",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=4),
            Stage(name="chat", config=chatml, depends_on=["a"], output="processor:chatml"),
        ],
    )
    materialize(wf, io_manager, instance)
    out = _read(io_manager, "ponly", "chat")
    assert list(out.columns) == ["messages"] and len(out) == 4


def test_on_success_output_and_version(io_manager, instance):
    def keep_red(artifact_dir: Path) -> Path:
        frame = pd.read_parquet(artifact_dir / "parquet-files")
        target = artifact_dir / "red.parquet"
        frame[frame["color"] == "red"].to_parquet(target)
        return target

    wf = Workflow(
        name="cb",
        stages=[Stage(name="a", config=sampler_builder(), num_records=30, on_success=keep_red, on_success_version="1")],
    )
    materialize(wf, io_manager, instance)
    out = _read(io_manager, "cb", "a")
    assert len(out) > 0 and set(out["color"]) == {"red"}


def _keep_none(artifact_dir: Path) -> Path:
    target = artifact_dir / "none.parquet"
    pd.read_parquet(artifact_dir / "parquet-files").iloc[0:0].to_parquet(target)
    return target


def test_allow_empty_skips_downstream_without_model_calls(io_manager, instance, llm, llm_resource):
    wf = Workflow(
        name="empty",
        stages=[
            Stage(name="filter", config=sampler_builder(), num_records=10, on_success=_keep_none, allow_empty=True),
            Stage(name="write", config=llm_builder("text", "Write about {{ color }}"), depends_on=["filter"]),
            Stage(name="after", config=expression_builder("y", "{{ text }}"), depends_on=["write"]),
        ],
    )
    result = materialize(wf, io_manager, instance, resource=llm_resource)
    assert result.success
    assert metadata_of(result, ["empty", "filter"])["dd_assets/status"] == "completed_empty"
    for stage in ("write", "after"):
        meta = metadata_of(result, ["empty", stage])
        assert meta["dd_assets/status"] == "skipped_empty_upstream"
        assert meta["dagster/row_count"] == 0
    assert llm.count() == 0
    assert io_manager.read_record("empty", "write")["status"] == "skipped_empty_upstream"


def test_empty_output_without_allow_empty_fails(io_manager, instance):
    wf = Workflow(
        name="noempty", stages=[Stage(name="a", config=sampler_builder(), num_records=5, on_success=_keep_none)]
    )
    result = materialize(wf, io_manager, instance, raise_on_error=False)
    message = failure_message(result, "noempty", "a")
    assert "workflow 'noempty', stage 'a': produced an empty output; set allow_empty=True" in message
    assert io_manager.read_record("noempty", "a") is None


def test_user_assets_read_stages_as_dataframe_table_or_dataset(io_manager, instance):
    wf = Workflow(name="cons", stages=[Stage(name="a", config=sampler_builder(), num_records=9)])
    seen = {}

    @dg.asset(ins={"frame": dg.AssetIn(key=["cons", "a"])})
    def as_frame(frame: pd.DataFrame) -> None:
        seen["frame"] = (type(frame), len(frame))

    @dg.asset(ins={"table": dg.AssetIn(key=["cons", "a"])})
    def as_table(table: pa.Table) -> None:
        seen["table"] = (type(table), table.num_rows)

    @dg.asset(ins={"handle": dg.AssetIn(key=["cons", "a"])})
    def as_handle(handle) -> None:
        seen["handle"] = (type(handle), handle.num_rows)

    materialize(wf, io_manager, instance, extra_assets=[as_frame, as_table, as_handle])
    assert seen == {"frame": (pd.DataFrame, 9), "table": (pa.Table, 9), "handle": (StageDataset, 9)}


def test_fsspec_url_base_dir(instance, tmp_path):
    from dd_assets import StageParquetIOManager

    io_manager = StageParquetIOManager(base_dir="memory://dd-assets-test", local_work_dir=str(tmp_path / "work"))
    wf = Workflow(
        name="remote",
        stages=[
            Stage(name="a", config=sampler_builder(), num_records=6),
            Stage(name="b", config=expression_builder("x", "{{ n }}"), depends_on=["a"]),
        ],
    )
    result = materialize(wf, io_manager, instance)
    assert result.success
    assert len(io_manager.read_stage("remote", "b").to_pandas()) == 6
    stage_dir = io_manager.stage_dir("remote", "b")
    assert (stage_dir / "stage.json").exists()
    assert (stage_dir / "artifacts" / "metadata.json").exists()
    assert metadata_of(result, ["remote", "b"])["dagster/uri"].startswith("memory://")


@pytest.mark.parametrize("failing_stage", ["on_success"])
def test_failed_run_leaves_the_published_output_intact(io_manager, instance, failing_stage):
    good = Workflow(name="atomic", stages=[Stage(name="a", config=sampler_builder(), num_records=11)])
    materialize(good, io_manager, instance)
    before = io_manager.read_record("atomic", "a")
    before_rows = _read(io_manager, "atomic", "a")

    def explode(_: Path) -> Path:
        raise RuntimeError("boom")

    bad = Workflow(
        name="atomic", stages=[Stage(name="a", config=sampler_builder(), num_records=11, on_success=explode)]
    )
    result = materialize(bad, io_manager, instance, raise_on_error=False)
    assert not result.success
    assert "on_success raised RuntimeError('boom')" in failure_message(result, "atomic", "a")
    assert io_manager.read_record("atomic", "a") == before
    pd.testing.assert_frame_equal(_read(io_manager, "atomic", "a"), before_rows)
    data_files = sorted(p.name for p in (Path(io_manager.stage_dir("atomic", "a").path) / "data").iterdir())
    assert data_files == sorted(Path(f).name for f in before["files"])


def test_rematerializing_replaces_the_output_and_removes_old_files(io_manager, instance):
    wf = Workflow(name="again", stages=[Stage(name="a", config=sampler_builder(), num_records=5)])
    materialize(wf, io_manager, instance)
    first = io_manager.read_record("again", "a")
    materialize(wf, io_manager, instance)
    second = io_manager.read_record("again", "a")
    assert first["files"] != second["files"]
    stage_dir = Path(io_manager.stage_dir("again", "a").path)
    # data/ is the current version's folder: exactly its files, nothing of another version
    assert (stage_dir / "data").resolve() == (stage_dir / "versions" / second["version"]).resolve()
    assert sorted(f"versions/{second['version']}/{p.name}" for p in (stage_dir / "data").iterdir()) == sorted(
        second["files"]
    )
    materialize(wf, io_manager, instance)
    third = io_manager.read_record("again", "a")
    # the current and the previous version are kept (for readers of the previous record); older ones go
    assert sorted(p.name for p in (stage_dir / "versions").iterdir()) == sorted([second["version"], third["version"]])
    assert not list((stage_dir / ".staging").glob("*/artifacts"))


def test_root_stage_with_its_own_seed_defaults_to_the_seed_row_count(io_manager, instance, tmp_path):
    seed = tmp_path / "seed.parquet"
    pd.DataFrame({"text": [f"t{i}" for i in range(17)]}).to_parquet(seed)
    builder = expression_builder("upper", "{{ text | upper }}").with_seed_dataset(
        dd.LocalFileSeedSource(path=str(seed))
    )
    materialize(Workflow(name="ownseed", stages=[Stage(name="a", config=builder)]), io_manager, instance)
    out = _read(io_manager, "ownseed", "a")
    assert list(out["upper"]) == [f"T{i}" for i in range(17)]


def test_failed_stage_resumes_finished_batches_without_new_model_calls(io_manager, instance, llm, llm_resource):
    callback = FailOnce()
    wf = Workflow(
        name="resume",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=6),
            Stage(
                name="write",
                config=llm_builder("text", "Write {{ color }} {{ n }}"),
                depends_on=["seed"],
                on_success=callback,
                on_success_version="1",
            ),
        ],
    )
    first = materialize(wf, io_manager, instance, resource=llm_resource, raise_on_error=False)
    assert not first.success
    assert llm.count("generation") == 6
    assert io_manager.read_record("resume", "write") is None
    staging = Path(io_manager.stage_dir("resume", "write").path) / ".staging"
    assert list(staging.glob("*/artifacts/metadata.json"))  # the finished batches are kept for the next run

    llm.reset()
    second = materialize(wf, io_manager, instance, resource=llm_resource, selection=[dg.AssetKey(["resume", "write"])])
    assert second.success
    assert llm.count("generation") == 0
    assert metadata_of(second, ["resume", "write"])["dd_assets/resumed"] is True
    assert len(_read(io_manager, "resume", "write")) == 6
    assert not list(staging.glob("*/artifacts"))
