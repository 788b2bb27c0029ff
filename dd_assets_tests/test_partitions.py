"""Partitioned stages (issue 8): shares, blocks, alike partitions, reading them all, load-time guards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import data_designer.config as dd
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dd_assets import Stage, StageDataset, Workflow, WorkflowDefinitionError, build_workflow_definitions
from dd_assets.storage.records import StageStorageError
from dd_assets_tests.helpers import expression_builder, materialize, metadata_of, sampler_builder

KEYS = ["0", "1", "2"]


def _with_id() -> dd.DataDesignerConfigBuilder:
    builder = sampler_builder()
    builder.add_column(dd.SamplerColumnConfig(name="id", sampler_type="uuid", params=dd.UUIDSamplerParams()))
    return builder


def _materialize_partitions(workflow, io_manager, instance, selection, keys=KEYS, **kwargs):
    results = [
        materialize(workflow, io_manager, instance, selection=selection, partition_key=k, **kwargs) for k in keys
    ]
    assert all(r.success for r in results)
    return results


def test_an_int_gives_zero_padded_static_keys():
    workflow = Workflow(name="pk", stages=[Stage(name="a", config=_with_id(), num_records=40, partitions=12)])
    assert workflow.stage("a").partitions_def.get_partition_keys() == [f"{i:02d}" for i in range(12)]
    defs = build_workflow_definitions(workflow)
    spec = defs.resolve_assets_def(dg.AssetKey(["pk", "a"])).specs_by_key[dg.AssetKey(["pk", "a"])]
    assert spec.partitions_def == dg.StaticPartitionsDefinition([f"{i:02d}" for i in range(12)])


def test_a_root_stage_generates_its_share_in_each_partition_and_no_rows_repeat(io_manager, instance):
    workflow = Workflow(name="share", stages=[Stage(name="a", config=_with_id(), num_records=10, partitions=3)])
    results = _materialize_partitions(workflow, io_manager, instance, ["share/a"])
    assert [io_manager.read_stage("share", "a", k).num_rows for k in KEYS] == [4, 3, 3]  # remainder goes first
    for key, result in zip(KEYS, results, strict=True):
        (event,) = result.get_asset_materialization_events()
        assert event.partition == key
        assert metadata_of(result, ["share", "a"])["dd_assets/num_records_requested"] == {"0": 4}.get(key, 3)
    everything = io_manager.read_stage("share", "a").to_pandas()
    assert len(everything) == 10 and everything["id"].is_unique
    # each partition is its own published stage: record, version folder and lock
    for key in KEYS:
        record = json.loads((Path(io_manager.base_dir) / "share/a/partitions" / key / "stage.json").read_text())
        assert record["partition"] == key and record["status"] == "completed"
    assert not (Path(io_manager.base_dir) / "share/a/stage.json").exists()


def test_alike_partitions_read_the_same_partition_upstream(io_manager, instance):
    workflow = Workflow(
        name="alike",
        stages=[
            Stage(name="a", config=_with_id(), num_records=9, partitions=3),
            Stage(name="b", config=expression_builder("x", "{{ id }}!"), depends_on=["a"], partitions=3),
        ],
    )
    _materialize_partitions(workflow, io_manager, instance, ["alike/a", "alike/b"])
    for key in KEYS:
        a = io_manager.read_stage("alike", "a", key).to_pandas()
        b = io_manager.read_stage("alike", "b", key).to_pandas()
        assert list(b["x"]) == [f"{i}!" for i in a["id"]]


def test_an_unpartitioned_stage_reads_every_partition_in_key_order_and_fails_on_a_missing_one(io_manager, instance):
    workflow = Workflow(
        name="fanin",
        stages=[
            Stage(name="a", config=_with_id(), num_records=12, partitions=3),
            Stage(name="c", config=expression_builder("y", "{{ id }}?"), depends_on=["a"]),
        ],
    )
    _materialize_partitions(workflow, io_manager, instance, ["fanin/a"], keys=["0", "2"])
    result = materialize(workflow, io_manager, instance, selection=["fanin/c"], raise_on_error=False)
    assert not result.success
    message = result.failure_data_for_node("fanin__c").error.to_string()
    assert "partition(s) '1' of 3 are not materialized" in message and "'fanin', stage 'a'" in message
    _materialize_partitions(workflow, io_manager, instance, ["fanin/a"], keys=["1"])
    assert materialize(workflow, io_manager, instance, selection=["fanin/c"]).success
    parts = [io_manager.read_stage("fanin", "a", k).to_pandas() for k in KEYS]
    c = io_manager.read_stage("fanin", "c").to_pandas()
    assert list(c["id"]) == list(pd.concat(parts)["id"])


def test_a_partitioned_stage_takes_its_block_of_an_unpartitioned_upstream(io_manager, instance):
    workflow = Workflow(
        name="blocks",
        stages=[
            Stage(name="a", config=_with_id(), num_records=10),
            Stage(name="b", config=expression_builder("x", "{{ id }}!"), depends_on=["a"], partitions=3),
        ],
    )
    assert materialize(workflow, io_manager, instance, selection=["blocks/a"]).success
    _materialize_partitions(workflow, io_manager, instance, ["blocks/b"])
    upstream = io_manager.read_stage("blocks", "a").to_pandas()
    blocks = [io_manager.read_stage("blocks", "b", k).to_pandas() for k in KEYS]
    assert [len(b) for b in blocks] == [3, 3, 4]  # Data Designer's PartitionBlock: the last block takes the rest
    assert list(pd.concat(blocks)["id"]) == list(upstream["id"])  # every row once, in order


def test_a_differently_partitioned_stage_takes_its_block_of_all_upstream_partitions(io_manager, instance):
    workflow = Workflow(
        name="repart",
        stages=[
            Stage(name="a", config=_with_id(), num_records=12, partitions=3),
            Stage(name="b", config=expression_builder("x", "{{ id }}!"), depends_on=["a"], partitions=2),
        ],
    )
    _materialize_partitions(workflow, io_manager, instance, ["repart/a"])
    _materialize_partitions(workflow, io_manager, instance, ["repart/b"], keys=["0", "1"])
    upstream = io_manager.read_stage("repart", "a").to_pandas()
    halves = [io_manager.read_stage("repart", "b", k).to_pandas() for k in ["0", "1"]]
    assert [len(h) for h in halves] == [6, 6]
    assert list(pd.concat(halves)["id"]) == list(upstream["id"])


def test_a_root_stage_with_a_seed_file_splits_the_file_into_blocks(io_manager, instance, tmp_path):
    seed = tmp_path / "seed.parquet"
    pq.write_table(pa.table({"topic": [f"t{i}" for i in range(8)]}), seed)
    builder = dd.DataDesignerConfigBuilder()
    builder.with_seed_dataset(dd.LocalFileSeedSource(path=str(seed)))
    builder.add_column(dd.ExpressionColumnConfig(name="label", expr="{{ topic }}!"))
    workflow = Workflow(name="seeded", stages=[Stage(name="a", config=builder, partitions=2)])
    _materialize_partitions(workflow, io_manager, instance, ["seeded/a"], keys=["0", "1"])
    first, second = (io_manager.read_stage("seeded", "a", k).to_pandas() for k in ["0", "1"])
    assert list(first["topic"]) == ["t0", "t1", "t2", "t3"] and list(second["topic"]) == ["t4", "t5", "t6", "t7"]


def test_any_partitions_definition_works_and_read_stage_returns_one_or_all(io_manager, instance):
    regions = dg.StaticPartitionsDefinition(["eu", "us"])
    workflow = Workflow(name="regions", stages=[Stage(name="a", config=_with_id(), num_records=6, partitions=regions)])
    _materialize_partitions(workflow, io_manager, instance, ["regions/a"], keys=["us", "eu"])
    eu = io_manager.read_stage("regions", "a", "eu")
    assert isinstance(eu, StageDataset) and eu.num_rows == 3 and eu.record["partition"] == "eu"
    everything = io_manager.read_stage("regions", "a")
    assert everything.num_rows == 6 and list(everything.record["partitions"]) == ["eu", "us"]
    with pytest.raises(StageStorageError, match="partition 'asia'"):
        io_manager.read_stage("regions", "a", "asia")


def test_a_partition_is_published_and_resumed_on_its_own(io_manager, instance):
    workflow = Workflow(name="own", stages=[Stage(name="a", config=_with_id(), num_records=6, partitions=2)])
    _materialize_partitions(workflow, io_manager, instance, ["own/a"], keys=["0"])
    first = io_manager.read_stage("own", "a", "0").to_pandas()
    _materialize_partitions(workflow, io_manager, instance, ["own/a"], keys=["1"])
    assert list(io_manager.read_stage("own", "a", "0").to_pandas()["id"]) == list(first["id"])  # untouched
    records = [io_manager.read_record("own", "a", k)["work_key"] for k in ["0", "1"]]
    assert records[0] != records[1]  # each partition resumes from its own work


@pytest.mark.parametrize(
    ("stages", "field", "fragment"),
    [
        ([Stage(name="a", config=sampler_builder(), partitions=1)], "partitions", "between 2 and"),
        ([Stage(name="a", config=sampler_builder(), partitions=True)], "partitions", "must be an int"),
        ([Stage(name="a", config=sampler_builder(), num_records=2, partitions=3)], "num_records", "leaves some"),
        (
            [
                Stage(name="a", config=sampler_builder(), num_records=10),
                Stage(
                    name="b",
                    config=expression_builder("x", "{{ n }}"),
                    depends_on=["a"],
                    partitions=2,
                    selection_strategy=dd.PartitionBlock(index=0, num_partitions=2),
                ),
            ],
            "selection_strategy",
            "takes its own block",
        ),
        (
            [
                Stage(name="a", config=sampler_builder(), num_records=10, partitions=2),
                Stage(name="u", config=sampler_builder(seed_column="m"), num_records=10),
                Stage(
                    name="b",
                    config=expression_builder("x", "{{ n }}"),
                    depends_on=["a", "u"],
                    combine="concat",
                    partitions=2,
                ),
            ],
            "depends_on",
            "partitioned like this stage",
        ),
    ],
)
def test_partition_mistakes_are_named_when_definitions_load(stages, field, fragment):
    with pytest.raises(WorkflowDefinitionError, match=fragment) as info:
        Workflow(name="bad", stages=stages)
    assert info.value.field == field and info.value.workflow == "bad"


def test_partitioned_stages_refuse_concurrent_execution():
    with pytest.raises(WorkflowDefinitionError, match="execution 'per_stage'"):
        Workflow(
            name="conc",
            execution="concurrent",
            stages=[Stage(name="a", config=sampler_builder(), num_records=4, partitions=2)],
        )
    workflow = Workflow(name="conc", stages=[Stage(name="a", config=sampler_builder(), num_records=4, partitions=2)])
    with pytest.raises(WorkflowDefinitionError, match="execution 'per_stage'"):
        build_workflow_definitions(workflow, execution="concurrent")


def test_yaml_partitions_and_the_cli_partition_flag(tmp_path, cli_env):
    (tmp_path / "wf.yaml").write_text(
        """
name: yparts
stages:
  - name: a
    num_records: 9
    partitions: 3
    config:
      columns:
        - {name: id, column_type: sampler, sampler_type: uuid, params: {}}
  - name: b
    depends_on: [a]
    partitions: 3
    config:
      columns:
        - {name: x, column_type: expression, expr: "{{ id }}!"}
"""
    )
    (tmp_path / "defs.py").write_text(
        "from pathlib import Path\n"
        "from dd_assets import Workflow, StageParquetIOManager, build_workflow_definitions\n"
        "here = Path(__file__).parent\n"
        "defs = build_workflow_definitions(Workflow.from_yaml(here / 'wf.yaml'),\n"
        "    io_manager=StageParquetIOManager(base_dir=str(here / 'data')))\n"
    )
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "dagster"), "asset", "materialize", "-f", "defs.py", "--select", "*", "--partition", "1"]
    proc = subprocess.run(command, cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage_dir = tmp_path / "data/yparts"
    assert sorted(p.name for p in (stage_dir / "a/partitions").iterdir()) == ["1"]
    record = json.loads((stage_dir / "b/partitions/1/stage.json").read_text())
    assert record["partition"] == "1" and record["output_rows"] == 3


def test_partition_keys_that_are_not_plain_names_get_safe_folders(io_manager, instance):
    odd = dg.StaticPartitionsDefinition(["2026-11-23", "eu/west", "a b"])
    workflow = Workflow(name="odd", stages=[Stage(name="a", config=_with_id(), num_records=6, partitions=odd)])
    _materialize_partitions(workflow, io_manager, instance, ["odd/a"], keys=["2026-11-23", "eu/west", "a b"])
    folders = sorted(p.name for p in (Path(io_manager.base_dir) / "odd/a/partitions").iterdir())
    assert folders == ["2026-11-23", "a%20b", "eu%2Fwest"]
    assert io_manager.stored_partitions("odd", "a") == ["2026-11-23", "a b", "eu/west"]
    assert io_manager.read_stage("odd", "a", "eu/west").record["partition"] == "eu/west"
    assert io_manager.read_stage("odd", "a").num_rows == 6


def test_adding_a_dynamic_partition_key_never_publishes_a_row_in_two_partitions(io_manager, instance):
    docs = dg.DynamicPartitionsDefinition(name="docs")
    workflow = Workflow(
        name="dyn",
        stages=[
            Stage(name="seed", config=_with_id(), num_records=12),
            Stage(name="split", config=expression_builder("x", "{{ id }}"), depends_on=["seed"], partitions=docs),
            Stage(name="all", config=expression_builder("y", "{{ x }}"), depends_on=["split"]),
        ],
    )
    materialize(workflow, io_manager, instance, selection=["dyn/seed"])
    instance.add_dynamic_partitions("docs", ["a", "b"])
    _materialize_partitions(workflow, io_manager, instance, ["dyn/split"], keys=["a", "b"])
    assert materialize(workflow, io_manager, instance, selection=["dyn/all"]).success
    assert io_manager.read_stage("dyn", "all").num_rows == 12

    instance.add_dynamic_partitions("docs", ["c"])  # every partition's block of the seed moves
    _materialize_partitions(workflow, io_manager, instance, ["dyn/split"], keys=["c"])
    record = io_manager.read_record("dyn", "split", "c")
    assert record["partition_block"] == {"index": 2, "count": 3}
    result = materialize(workflow, io_manager, instance, selection=["dyn/all"], raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("dyn__all").error
    message = str(failure.message) + str(failure.cause.message if failure.cause else "")
    assert "partition 'a' took block 0 of 2 of its seed, but the stage now has 3 partitions" in message
    assert "partition 'b' took block 1 of 2" in message and "partition 'c'" not in message
    assert io_manager.read_stage("dyn", "all").num_rows == 12  # the previous output is kept
    for read in (
        lambda: io_manager.read_stage("dyn", "split"),
        lambda: io_manager.read_stage("dyn", "split", partitions_def=docs),
    ):
        with pytest.raises(StageStorageError, match="rows overlap the newer partitions"):
            read()  # a bare read, export and preview see the same

    _materialize_partitions(workflow, io_manager, instance, ["dyn/split"], keys=["a", "b"])
    assert materialize(workflow, io_manager, instance, selection=["dyn/all"]).success
    rows = io_manager.read_stage("dyn", "all").to_pandas()
    assert len(rows) == 12 and rows["x"].is_unique


def test_partition_keys_never_escape_their_folder_and_every_key_gets_its_own(io_manager, instance):
    keys = ["x", "..", "."]
    dots = dg.StaticPartitionsDefinition(keys)
    workflow = Workflow(name="dots", stages=[Stage(name="a", config=_with_id(), num_records=9, partitions=dots)])
    _materialize_partitions(workflow, io_manager, instance, ["dots/a"], keys=keys)
    stage_dir = Path(io_manager.base_dir) / "dots/a"
    assert not (stage_dir / "stage.json").exists() and not (stage_dir / "partitions/stage.json").exists()
    assert sorted(p.name for p in (stage_dir / "partitions").iterdir()) == ["%2E", "%2E.", "x"]
    assert io_manager.stored_partitions("dots", "a") == [".", "..", "x"]
    assert [io_manager.read_stage("dots", "a", k).num_rows for k in keys] == [3, 3, 3]
    assert io_manager.read_stage("dots", "a").num_rows == 9

    from dd_assets.storage.layout import partition_dir_name

    tricky = ["", ".", "..", ".hidden", "a/b", "a%2Fb", "%", "%2E", "~", "-x", "x" * 255, "x" * 256, "é" * 200]
    names = [partition_dir_name(k) for k in tricky]
    assert len(set(names)) == len(tricky)  # injective
    assert all(n not in ("", ".", "..") and "/" not in n and not n.startswith(".") for n in names)
    assert all(len(n.encode()) <= 255 for n in names)
    assert [partition_dir_name(k) for k in ["eu", "2026-11-23", "a.b", "k=v", "x" * 255]] == [
        "eu",
        "2026-11-23",
        "a.b",
        "k=v",
        "x" * 255,
    ]  # plain names keep the folder name they always had


def _repartitioned(partitions):
    return Workflow(
        name="rp",
        stages=[
            Stage(name="a", config=_with_id(), num_records=12, partitions=partitions),
            Stage(name="c", config=expression_builder("y", "{{ id }}?"), depends_on=["a"]),
        ],
    )


def _export(tmp_path, io_manager, partitions, ref="rp/a", *extra):
    """``dd-assets export`` (in process) of a project defining ``_repartitioned(partitions)``; returns rows or exit."""
    from dd_assets.tools import cli

    project = tmp_path / f"project_{partitions}.py"
    project.write_text(
        "from dd_assets import StageParquetIOManager, build_workflow_definitions\n"
        "from dd_assets_tests.test_partitions import _repartitioned\n"
        f"defs = build_workflow_definitions(_repartitioned({partitions!r}), "
        f"io_manager=StageParquetIOManager(base_dir={io_manager.base_dir!r}))\n"
    )
    out = tmp_path / f"export-{partitions}-{len(list(tmp_path.glob('export-*')))}.parquet"
    code = cli.main(["export", ref, str(out), "-f", str(project), *extra])
    return pq.read_table(out).num_rows if code == 0 else code


def test_whole_stage_reads_see_only_the_partitions_of_the_current_definition(io_manager, instance, tmp_path, capsys):
    _materialize_partitions(_repartitioned(4), io_manager, instance, ["rp/a"], keys=["0", "1", "2", "3"])
    assert io_manager.read_stage("rp", "a").num_rows == 12
    two = _repartitioned(2)
    _materialize_partitions(two, io_manager, instance, ["rp/a"], keys=["0"])
    # partition 1 was published under 4 partitions (a quarter, not a half): stale, like the old partitions 2 and 3
    assert io_manager.read_stage("rp", "a").num_rows == 6
    with pytest.raises(StageStorageError, match="earlier partitioning"):
        io_manager.read_stage("rp", "a", "1")
    assert _export(tmp_path, io_manager, 2) == 1
    assert "partition(s) '1' were published under an earlier partitioning" in capsys.readouterr().err
    result = materialize(two, io_manager, instance, selection=["rp/c"], raise_on_error=False)
    assert not result.success and "earlier partitioning" in result.failure_data_for_node("rp__c").error.to_string()

    _materialize_partitions(two, io_manager, instance, ["rp/a"], keys=["1"])
    halves = [io_manager.read_stage("rp", "a", k).to_pandas() for k in ["0", "1"]]
    assert io_manager.read_stage("rp", "a").num_rows == 12 and _export(tmp_path, io_manager, 2) == 12
    assert materialize(two, io_manager, instance, selection=["rp/c"]).success
    assert list(io_manager.read_stage("rp", "c").to_pandas()["id"]) == list(pd.concat(halves)["id"])
    assert (Path(io_manager.base_dir) / "rp/a/partitions/3/stage.json").exists()  # nothing published is deleted


def test_a_stage_that_changes_between_unpartitioned_and_partitioned_never_serves_the_other_layout(
    io_manager, instance, tmp_path
):
    from dd_assets.tools import cli

    assert materialize(_repartitioned(None), io_manager, instance, selection=["rp/a"]).success
    unpartitioned = set(io_manager.read_stage("rp", "a").to_pandas()["id"])
    two = _repartitioned(2)
    _materialize_partitions(two, io_manager, instance, ["rp/a"], keys=["0"])
    first = io_manager.read_stage("rp", "a")
    assert first.num_rows == 6 and not set(first.to_pandas()["id"]) & unpartitioned
    assert _export(tmp_path, io_manager, 2) == 1  # partition 1 is not materialized under this definition
    _materialize_partitions(two, io_manager, instance, ["rp/a"], keys=["1"])
    partitioned = set(io_manager.read_stage("rp", "a").to_pandas()["id"])
    assert len(partitioned) == 12 and not partitioned & unpartitioned and _export(tmp_path, io_manager, 2) == 12
    location = cli.load_code_location(None, str(tmp_path / "project_2.py"))
    assert set(cli.preview(location, "rp/c", 12)["id"]) <= partitioned

    assert materialize(_repartitioned(None), io_manager, instance, selection=["rp/a"]).success  # and back again
    again = set(io_manager.read_stage("rp", "a").to_pandas()["id"])
    assert len(again) == 12 and not again & partitioned and _export(tmp_path, io_manager, None) == 12
    with pytest.raises(StageStorageError, match="last published unpartitioned"):
        io_manager.read_stage("rp", "a", "0")


def test_partitions_whose_schemas_differ_read_as_they_were_unified(io_manager, instance, tmp_path):
    pq.write_table(pa.table({"n": pa.array([1, 2], pa.int64()), "only_0": ["a", "b"]}), tmp_path / "p0.parquet")
    pq.write_table(pa.table({"n": pa.array([2.5], pa.float64())}), tmp_path / "p1.parquet")
    pq.write_table(pa.table({"n": ["text"]}), tmp_path / "p1_text.parquet")
    workflow = Workflow(name="schemas", stages=[Stage(name="a", config=sampler_builder(), num_records=4, partitions=2)])

    def publish(key, file):
        override = {"ops": {"schemas__a": {"config": {"output_override": str(tmp_path / file)}}}}
        assert materialize(workflow, io_manager, instance, partition_key=key, run_config=override).success

    publish("0", "p0.parquet")
    publish("1", "p1.parquet")
    whole = io_manager.read_stage("schemas", "a")
    assert whole.schema.field("n").type == pa.float64()
    table = whole.to_arrow()  # failed: the schema was unified permissively, the tables concatenated strictly
    assert table.schema == whole.schema and table.column("n").to_pylist() == [1.0, 2.0, 2.5]
    assert table.column("only_0").to_pylist() == ["a", "b", None]
    assert whole.head(3).schema == whole.schema and len(whole.to_pandas()) == 3

    publish("1", "p1_text.parquet")  # int64 and string do not combine: a clear error naming the stage, no raw one
    with pytest.raises(StageStorageError, match=r"stage 'a': the schemas of partitions '0', '1' do not combine"):
        io_manager.read_stage("schemas", "a")
