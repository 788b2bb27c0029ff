"""The ``dd-assets`` command, run for real in subprocesses: status, export, preview and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dd_assets_tests.conftest import cli_environment

BIN = Path(sys.executable).parent

PROJECT = """
from pathlib import Path
import data_designer.config as dd
from dd_assets import Stage, StageParquetIOManager, Workflow, build_workflow_definitions

here = Path(__file__).parent
root = dd.DataDesignerConfigBuilder()
root.add_column(dd.SamplerColumnConfig(name="id", sampler_type="uuid", params=dd.UUIDSamplerParams()))
root.add_column(dd.SamplerColumnConfig(name="region", sampler_type="category",
                                       params=dd.CategorySamplerParams(values=["east/1", "west/2"])))
label = dd.DataDesignerConfigBuilder()
label.add_column(dd.ExpressionColumnConfig(name="label", expr="{{ region }}-{{ id[:4] }}"))
workflow = Workflow(name="shop", stages=[
    Stage(name="people", config=root, num_records=NUM_RECORDS),
    Stage(name="labels", config=label, depends_on=["people"]),
    Stage(name="parts", config=root, num_records=6, partitions=2),
])
defs = build_workflow_definitions(workflow, io_manager=StageParquetIOManager(base_dir=str(here / "data")))
"""


def _project(tmp_path: Path, num_records: int = 12) -> Path:
    path = tmp_path / "project.py"
    path.write_text(PROJECT.replace("NUM_RECORDS", str(num_records)))
    return path


def _run(tmp_path: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "dd-assets"), *args, "-f", str(tmp_path / "project.py")],
        env=cli_environment(tmp_path),
        cwd=cwd or tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _materialize(tmp_path: Path, *args: str) -> None:
    command = [str(BIN / "dagster"), "asset", "materialize", "-f", str(tmp_path / "project.py"), *args]
    proc = subprocess.run(command, env=cli_environment(tmp_path), cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_status_export_and_preview_of_a_real_project(tmp_path):
    _project(tmp_path)
    before = _run(tmp_path, "status")
    assert before.returncode == 0, before.stderr
    assert "shop/people" in before.stdout and "never materialized" in before.stdout

    _materialize(tmp_path, "--select", "shop/people,shop/labels")
    _materialize(tmp_path, "--select", "shop/parts", "--partition", "1")
    status = _run(tmp_path, "status").stdout
    people = next(line for line in status.splitlines() if line.startswith("shop/people "))
    assert "completed" in people and " 12 " in people and "current" in people
    assert "shop/parts[1]" in status and "shop/parts[0]" not in status

    for suffix in ("jsonl", "csv", "parquet"):
        out = tmp_path / "out" / f"labels.{suffix}"
        result = _run(tmp_path, "export", "shop/labels", str(out))
        assert result.returncode == 0, result.stderr
        assert f"wrote 12 rows of shop/labels to {out}" in result.stdout
    lines = (tmp_path / "out/labels.jsonl").read_text().splitlines()
    assert len(lines) == 12 and "/" in json.loads(lines[0])["region"]  # written as is, not escaped
    assert len(pd.read_csv(tmp_path / "out/labels.csv")) == 12
    assert pq.read_table(tmp_path / "out/labels.parquet").column_names[-1] == "label"
    part = _run(tmp_path, "export", "shop/parts", str(tmp_path / "part1.parquet"), "--partition", "1")
    assert part.returncode == 0 and pq.read_table(tmp_path / "part1.parquet").num_rows == 3

    preview = _run(tmp_path, "preview", "shop/labels", "-n", "3")
    assert preview.returncode == 0, preview.stderr[-2000:]
    assert "preview of shop/labels: 3 records, nothing published" in preview.stdout
    assert "label" in preview.stdout.splitlines()[0]
    assert json.loads((tmp_path / "data/shop/labels/stage.json").read_text())["output_rows"] == 12  # untouched


def test_a_changed_definition_shows_as_stale(tmp_path):
    _project(tmp_path, num_records=12)
    _materialize(tmp_path, "--select", "shop/people")
    _project(tmp_path, num_records=13)
    people = next(line for line in _run(tmp_path, "status").stdout.splitlines() if line.startswith("shop/people "))
    assert "STALE" in people


def test_status_is_stale_where_dagster_says_unsynced_after_an_upstream_is_rematerialized(tmp_path):
    import runpy

    import dagster as dg
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    _project(tmp_path)
    _materialize(tmp_path, "--select", "shop/people,shop/labels")
    _materialize(tmp_path, "--select", "shop/people")  # new ids: a new data version of labels' upstream
    status = _run(tmp_path, "status").stdout.splitlines()
    people = next(line for line in status if line.startswith("shop/people "))
    labels = next(line for line in status if line.startswith("shop/labels "))
    assert "current" in people and "STALE (upstream people changed)" in labels, status

    defs = runpy.run_path(str(tmp_path / "project.py"))["defs"]
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster_home"))

    def dagster_status(stage: str) -> StaleStatus:
        resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
        return resolver.get_status(dg.AssetKey(["shop", stage]))

    assert dagster_status("labels") == StaleStatus.STALE and dagster_status("people") == StaleStatus.FRESH

    _materialize(tmp_path, "--select", "shop/labels")
    labels = next(line for line in _run(tmp_path, "status").stdout.splitlines() if line.startswith("shop/labels "))
    assert "current" in labels and dagster_status("labels") == StaleStatus.FRESH


def test_errors_name_the_problem_and_exit_non_zero(tmp_path):
    _project(tmp_path)
    unknown = _run(tmp_path, "export", "shop/nope", str(tmp_path / "x.csv"))
    assert unknown.returncode == 2 and "has no stage 'nope' (stages: people, labels, parts)" in unknown.stderr
    workflow = _run(tmp_path, "preview", "shoppe/people")
    assert workflow.returncode == 2 and "unknown workflow 'shoppe' (workflows: shop)" in workflow.stderr
    unpublished = _run(tmp_path, "export", "shop/people", str(tmp_path / "x.csv"))
    assert unpublished.returncode == 1 and "no published output" in unpublished.stderr
    suffix = _run(tmp_path, "export", "shop/people", str(tmp_path / "x.xlsx"))
    assert suffix.returncode == 2 and ".jsonl, .csv, .parquet" in suffix.stderr

    _materialize(tmp_path, "--select", "shop/people")
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where a folder is expected")
    unwritable = _run(tmp_path, "export", "shop/people", str(blocked / "out.csv"))
    assert unwritable.returncode == 1 and "cannot write" in unwritable.stderr
    preview_upstream = _run(tmp_path, "preview", "shop/labels")
    assert preview_upstream.returncode == 0  # its upstream is now published


def test_no_folder_appears_where_dagster_or_dd_assets_is_started(tmp_path):
    _project(tmp_path)
    cwd = tmp_path / "empty"
    cwd.mkdir()
    command = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-f",
        str(tmp_path / "project.py"),
        "--select",
        "shop/people",
    ]
    assert subprocess.run(command, env=cli_environment(tmp_path), cwd=cwd, capture_output=True).returncode == 0
    for args in (["status"], ["preview", "shop/labels", "-n", "2"], ["export", "shop/people", str(tmp_path / "p.csv")]):
        assert _run(tmp_path, *args, cwd=cwd).returncode == 0
    assert list(cwd.iterdir()) == []


PUBLISHING_PROJECT = """
import os
from pathlib import Path
import data_designer.config as dd
from dd_assets import DataDesignerResource, Stage, StageParquetIOManager, Workflow, build_workflow_definitions

here = Path(__file__).parent
root = dd.DataDesignerConfigBuilder()
root.add_column(dd.SamplerColumnConfig(name="id", sampler_type="uuid", params=dd.UUIDSamplerParams()))
root.add_column(
    dd.SamplerColumnConfig(name="price", sampler_type="uniform", params=dd.UniformSamplerParams(low=1, high=9))
)
priced = dd.DataDesignerConfigBuilder()
priced.add_column(dd.ExpressionColumnConfig(name="label", expr="{{ id[:4] }} costs {{ price }}"))
shaped = dd.DataDesignerConfigBuilder()
shaped.add_column(dd.ExpressionColumnConfig(name="line", expr="{{ label }}!"))
shaped.add_processor(dd.SchemaTransformProcessorConfig(name="records", template={"text": "{{ line }}"}))
model = dd.ModelConfig(alias="writer", model="test-model", provider="local",
                       inference_parameters=dd.ChatCompletionInferenceParams(max_tokens=32))
write = dd.DataDesignerConfigBuilder(model_configs=[model])
long_prompt = "Write at length about {{ label }}. " * 20
write.add_column(dd.LLMTextColumnConfig(name="essay", model_alias="writer", prompt=long_prompt))
workflow = Workflow(name="shop", stages=[
    Stage(name="items", config=root, num_records=6),
    Stage(name="labels", config=priced, depends_on=["items"],
          output_processors=[dd.DropColumnsProcessorConfig(name="drop_price", column_names=["price"])]),
    Stage(name="shaped", config=shaped, depends_on=["labels"], output="processor:records"),
    Stage(name="essays", config=write, depends_on=["labels"]),
])
endpoint = os.environ.get("TEST_ENDPOINT")
provider = {"name": "local", "endpoint": endpoint} if endpoint else {"name": "other", "endpoint": "http://127.0.0.1:9"}
providers = [{**provider, "api_key": "DD_ASSETS_TEST_API_KEY"}]
defs = build_workflow_definitions(workflow, io_manager=StageParquetIOManager(base_dir=str(here / "data")),
                                  data_designer=DataDesignerResource(model_providers=providers,
                                                                     setup_hint="set TEST_ENDPOINT"))
"""


def _published_columns(tmp_path: Path, stage: str) -> list[str]:
    record = json.loads((tmp_path / "data" / "shop" / stage / "stage.json").read_text())
    return pq.read_schema(tmp_path / "data" / "shop" / stage / record["files"][0]).names


def test_preview_shows_what_the_stage_would_publish(tmp_path):
    (tmp_path / "project.py").write_text(PUBLISHING_PROJECT)
    _materialize(tmp_path, "--select", "shop/items,shop/labels,shop/shaped")
    for stage in ("labels", "shaped"):  # output processors run; a processor output selected as the output
        proc = _run(tmp_path, "preview", f"shop/{stage}", "-n", "3")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.splitlines()[0].split() == _published_columns(tmp_path, stage), proc.stdout
    assert "price" not in _run(tmp_path, "preview", "shop/labels").stdout.splitlines()[0]


def test_preview_of_an_llm_stage_without_its_provider_names_the_stage_and_the_fix(tmp_path):
    (tmp_path / "project.py").write_text(PUBLISHING_PROJECT)
    _materialize(tmp_path, "--select", "shop/items,shop/labels")
    proc = _run(tmp_path, "preview", "shop/essays")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output, output
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "workflow 'shop', stage 'essays': model alias 'writer' uses provider 'local', which is not configured" in (
        proc.stderr
    )
    assert "(configured: other)" in proc.stderr
    assert "set TEST_ENDPOINT" in proc.stderr


def test_preview_of_a_stage_whose_every_prompt_overflows_names_the_reason(tmp_path, llm):
    (tmp_path / "project.py").write_text(PUBLISHING_PROJECT)
    _materialize(tmp_path, "--select", "shop/items,shop/labels")
    llm.context_window = 200
    proc = subprocess.run(
        [str(BIN / "dd-assets"), "preview", "shop/essays", "-n", "3", "-f", str(tmp_path / "project.py")],
        env=cli_environment(tmp_path, TEST_ENDPOINT=llm.endpoint, DD_ASSETS_TEST_API_KEY="sk-local"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in output, output
    error = next(line for line in proc.stderr.splitlines() if line.startswith("dd-assets: "))
    assert "workflow 'shop', stage 'essays': preview failed" in error and "warnings above" not in error, error
    assert "maximum context length is 200 tokens" in error and "|---" not in error, error
    assert error.endswith(f"(model alias 'writer' (model 'test-model') on provider 'local' at {llm.endpoint})")


TRANSLATED_PROJECT = """
from pathlib import Path
import dagster as dg
import data_designer.config as dd
from dd_assets import DataDesignerStageTranslator, Stage, StageParquetIOManager, Workflow, build_workflow_definitions

here = Path(__file__).parent


class TeamTranslator(DataDesignerStageTranslator):
    def get_asset_key(self, workflow, stage):
        return dg.AssetKey(["team", workflow.name, stage.name])

    def get_upstream_key(self, workflow, dep):
        return dg.AssetKey(["team", workflow.name, dep]) if isinstance(dep, str) else dep

    def get_code_version(self, workflow, stage):
        return "team-" + super().get_code_version(workflow, stage)


def workflow(records):
    root = dd.DataDesignerConfigBuilder()
    root.add_column(dd.SamplerColumnConfig(name="id", sampler_type="uuid", params=dd.UUIDSamplerParams()))
    return Workflow(name="shop", stages=[Stage(name="people", config=root, num_records=records)])


io_manager = StageParquetIOManager(base_dir=str(here / "data"))
defs = build_workflow_definitions(workflow(RECORDS), io_manager=io_manager, translator=TeamTranslator())
# another definition of the same workflow name, built later in the same process, is not this code location's
drafts = [build_workflow_definitions(workflow(99), io_manager=io_manager)]
"""


def test_status_uses_the_code_locations_own_specs_and_workflows(tmp_path):
    (tmp_path / "project.py").write_text(TRANSLATED_PROJECT.replace("RECORDS", "5"))
    _materialize(tmp_path, "--select", "team/shop/people")
    people = next(line for line in _run(tmp_path, "status").stdout.splitlines() if line.startswith("shop/people "))
    assert "completed" in people and " 5 " in people and "current" in people  # the custom translator's code version
    preview = _run(tmp_path, "preview", "shop/people", "-n", "2")
    assert "preview of shop/people: 2 records" in preview.stdout, preview.stderr[-2000:]
    (tmp_path / "project.py").write_text(TRANSLATED_PROJECT.replace("RECORDS", "6"))
    people = next(line for line in _run(tmp_path, "status").stdout.splitlines() if line.startswith("shop/people "))
    assert "STALE" in people


# --- export, in process: the files it writes ----------------------------------------------------
def _odd_values(path: Path) -> None:
    import datetime

    import pyarrow as pa

    table = pa.table(
        {
            "raw": pa.array([b"\x00\xffhi", None, b"", b"ok"], pa.binary()),
            "score": pa.array([1.5, float("nan"), float("inf"), float("-inf")]),
            "tags": pa.array([[1, 2], [], None, [3]], pa.list_(pa.int64())),
            "point": pa.array([{"x": 1, "y": "a,b"}, None, {"x": 2, "y": 'q"uote'}, {"x": 3, "y": ""}]),
            "attrs": pa.array([[("k", 1)], [], None, [("a", 2), ("b", 3)]], pa.map_(pa.string(), pa.int64())),
            "at": pa.array([datetime.datetime(2026, 1, 2, 3, 4, 5)] * 4, pa.timestamp("us")),
            "flag": pa.array([True, False, None, True]),
        }
    )
    pq.write_table(table, path)


def _exported(tmp_path, io_manager, instance, monkeypatch):
    from dd_assets import Stage, Workflow, build_workflow_definitions
    from dd_assets.tools import cli
    from dd_assets.tools.code_location import CodeLocation
    from dd_assets_tests.helpers import materialize, sampler_builder

    _odd_values(tmp_path / "odd.parquet")
    workflow = Workflow(name="odd", stages=[Stage(name="a", config=sampler_builder(), num_records=4)])
    override = {"ops": {"odd__a": {"config": {"output_override": str(tmp_path / "odd.parquet")}}}}
    assert materialize(workflow, io_manager, instance, run_config=override).success
    location = CodeLocation(
        defs=build_workflow_definitions(workflow, io_manager=io_manager), workflows={"odd": workflow}
    )
    monkeypatch.setattr(cli, "load_code_location", lambda module, file: location)
    return cli


def test_export_refuses_to_overwrite_a_file_without_force(tmp_path, io_manager, instance, monkeypatch, capsys):
    cli = _exported(tmp_path, io_manager, instance, monkeypatch)
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    assert cli.main(["export", "odd/a", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{out} already exists; pass --force to overwrite it" in err and "Traceback" not in err
    assert out.read_text() == "precious\n"
    assert cli.main(["export", "odd/a", str(out), "--force"]) == 0
    assert len(out.read_text().splitlines()) == 4


def test_jsonl_and_csv_exports_write_every_value_faithfully(tmp_path, io_manager, instance, monkeypatch):
    import base64
    import csv

    cli = _exported(tmp_path, io_manager, instance, monkeypatch)
    assert cli.main(["export", "odd/a", str(tmp_path / "o.jsonl")]) == 0
    assert cli.main(["export", "odd/a", str(tmp_path / "o.csv")]) == 0

    def strict(constant):
        raise ValueError(f"not JSON: {constant}")

    rows = [json.loads(line, parse_constant=strict) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [base64.b64decode(r["raw"]) if r["raw"] is not None else None for r in rows] == [
        b"\x00\xffhi",
        None,
        b"",
        b"ok",
    ]
    assert [r["score"] for r in rows] == [1.5, None, None, None]  # NaN and infinities are null: valid JSON
    assert [r["tags"] for r in rows] == [[1, 2], [], None, [3]]
    assert rows[0]["point"] == {"x": 1, "y": "a,b"} and rows[1]["point"] is None
    assert [r["attrs"] for r in rows] == [{"k": 1}, {}, None, {"a": 2, "b": 3}]
    assert rows[0]["at"] == "2026-01-02T03:04:05" and [r["flag"] for r in rows] == [True, False, None, True]

    with open(tmp_path / "o.csv", newline="", encoding="utf-8") as handle:
        header, *cells = list(csv.reader(handle))
    table = [dict(zip(header, row, strict=True)) for row in cells]
    assert [base64.b64decode(r["raw"]) for r in table] == [b"\x00\xffhi", b"", b"", b"ok"]  # null: an empty cell
    assert [r["score"] for r in table] == ["1.5", "NaN", "inf", "-inf"]
    assert [json.loads(r["tags"]) if r["tags"] else None for r in table] == [[1, 2], [], None, [3]]
    assert json.loads(table[2]["point"]) == {"x": 2, "y": 'q"uote'} and json.loads(table[3]["attrs"]) == {
        "a": 2,
        "b": 3,
    }
    assert table[0]["at"] == "2026-01-02T03:04:05"
    assert pd.read_csv(tmp_path / "o.csv")["score"].tolist()[0] == 1.5


def test_a_record_naming_no_files_is_unreadable_not_an_empty_output(
    tmp_path, io_manager, instance, monkeypatch, capsys
):
    from dd_assets.storage.records import StageRecordUnreadableError

    cli = _exported(tmp_path, io_manager, instance, monkeypatch)
    record_path = Path(io_manager.base_dir) / "odd/a/stage.json"
    record = json.loads(record_path.read_text())
    for files in ([], "versions/x/part-00000.parquet"):
        record_path.write_text(json.dumps({**record, "files": files}))
        with pytest.raises(StageRecordUnreadableError, match="unreadable"):
            io_manager.read_stage("odd", "a")
        assert cli.main(["export", "odd/a", str(tmp_path / "none.jsonl")]) == 1
        assert "unreadable" in capsys.readouterr().err and not (tmp_path / "none.jsonl").exists()
