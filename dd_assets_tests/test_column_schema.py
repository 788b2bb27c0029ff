"""Columns before the first run: each stage's definition carries its columns, types and how each is made."""

from __future__ import annotations

import dagster as dg
import data_designer.config as dd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dd_assets import Stage, Workflow, build_workflow_definitions
from dd_assets.examples.quickstart import quickstart_workflow
from dd_assets_tests.helpers import llm_builder, materialize, metadata_of, model_config


def _schema(defs: dg.Definitions, key: list[str]) -> dict[str, tuple[str, str]] | None:
    asset_key = dg.AssetKey(key)
    value = defs.resolve_assets_def(asset_key).specs_by_key[asset_key].metadata.get("dagster/column_schema")
    if value is None:
        return None
    schema = getattr(value, "schema", value)
    return {c.name: (c.type, c.description) for c in schema.columns}


def test_quickstart_stages_show_their_columns_before_any_run():
    defs = build_workflow_definitions(quickstart_workflow())
    customers = _schema(defs, ["quickstart", "customers"])
    assert list(customers) == ["customer_id", "region", "segment", "tenure_years", "customer_label"]
    assert customers["customer_id"] == ("string", 'sampler uuid {"short_form": false, "uppercase": false}')
    assert customers["tenure_years"][0] == "int" and customers["tenure_years"][1].startswith("sampler uniform")
    assert customers["customer_label"] == ("string", "expression: {{ segment }}/{{ region }}")

    orders = _schema(defs, ["quickstart", "orders"])
    assert list(orders)[:6] == ["customer_id", "region", "segment", "tenure_years", "customer_label", "product"]
    assert orders["region"][1].startswith("from stage 'customers': sampler category")
    assert "unit_price" not in orders  # a dropped column is absent
    joined = _schema(defs, ["quickstart", "customer_360"])
    assert joined["customer_id"][1].startswith("from stage 'customers': ")  # the stage that made it, not the path
    assert joined["channel"][1].startswith("from stage 'tickets': ")
    export = _schema(defs, ["quickstart", "export"])
    assert list(export) == ["id", "summary", "follow_up"]  # a schema-transform processor's output


def test_llm_judge_seed_file_and_unknowable_columns(tmp_path):
    seed = tmp_path / "topics.parquet"
    pq.write_table(pa.table({"topic": ["a", "b"], "level": [1, 2]}), seed)
    root = dd.DataDesignerConfigBuilder(model_configs=[model_config()])
    root.with_seed_dataset(dd.LocalFileSeedSource(path=str(seed)))
    root.add_column(
        dd.LLMTextColumnConfig(
            name="answer", model_alias="test-model", prompt="Explain {{ topic }} at level {{ level }}"
        )
    )
    root.add_column(
        dd.LLMJudgeColumnConfig(
            name="grade",
            model_alias="test-model",
            prompt="Grade {{ answer }}",
            scores=[dd.Score(name="clarity", description="clear?", options={1: "no", 2: "yes"})],
        )
    )
    workflow = Workflow(
        name="judged",
        stages=[
            Stage(name="root", config=root),
            Stage(name="other", config=llm_builder("x", "Say {{ topic }}"), depends_on=["root"]),
            Stage(
                name="mixed",
                config=llm_builder("y", "Say {{ topic }}"),
                depends_on=["root", "other"],
                combine=lambda d: d["root"].to_pandas(),
            ),
        ],
    )
    defs = build_workflow_definitions(workflow)
    columns = _schema(defs, ["judged", "root"])
    assert columns["topic"] == ("any", f"seed column from {seed}")
    assert columns["answer"] == (
        "string",
        "llm-text column on model alias 'test-model': prompt 'Explain {{ topic }} at level {{ level }}'",
    )
    assert columns["grade"][0] == "json" and "judge scores clarity" in columns["grade"][1]
    assert _schema(defs, ["judged", "mixed"]) is None  # a callable combine: not knowable before a run


def test_a_materialization_adds_the_real_types_to_the_same_descriptions(io_manager, instance):
    workflow = quickstart_workflow()
    result = materialize(workflow, io_manager, instance, selection=["quickstart/customers", "quickstart/orders"])
    planned = _schema(build_workflow_definitions(workflow), ["quickstart", "orders"])
    materialized = metadata_of(result, ["quickstart", "orders"])["dagster/column_schema"]
    # the planned columns are the real ones; Data Designer's physical column order varies between runs (samplers
    # and seed columns are written by concurrent tasks), so only the set is compared
    assert sorted(c.name for c in materialized.columns) == sorted(planned)
    schema = metadata_of(result, ["quickstart", "customers"])["dagster/column_schema"]
    columns = {c.name: (c.type, c.description) for c in schema.columns}
    assert columns["tenure_years"][0] == "int64" and columns["tenure_years"][1].startswith("sampler uniform")
    assert columns["customer_label"] == ("large_string", "expression: {{ segment }}/{{ region }}")  # Arrow's type


def test_validation_and_the_planned_schema_follow_one_column_flow_for_a_config_processor_output():
    from dd_assets import Stage, Workflow, WorkflowDefinitionError
    from dd_assets.spec.column_schema import stage_column_schema
    from dd_assets_tests.helpers import expression_builder, sampler_builder

    source = sampler_builder()
    source.add_processor(dd.SchemaTransformProcessorConfig(name="pairs", template={"pair": "{{ color }}:{{ n }}"}))
    drop = [dd.DropColumnsProcessorConfig(name="drop_color", column_names=["color"])]

    def workflow(template: str) -> Workflow:
        return Workflow(
            name="flow",
            stages=[
                # the selected output is the config processor `pairs`, although output_processors are set too
                Stage(name="source", config=source, num_records=3, output="processor:pairs", output_processors=drop),
                Stage(name="reader", config=expression_builder("copy", template), depends_on=["source"]),
            ],
        )

    ok = workflow("{{ pair }}")
    assert [c.name for c in stage_column_schema(ok, ok.stage("source")).columns] == ["pair"]
    with pytest.raises(WorkflowDefinitionError) as info:
        workflow("{{ n }}")  # `n` is not in the processor output the stage hands on
    assert "stage 'reader', field 'config'" in str(info.value)
    assert "column 'copy' reads 'n'" in str(info.value) and "available: pair)" in str(info.value)


def test_a_csv_seed_header_with_quoted_names_is_read_as_csv(tmp_path, io_manager, instance):
    from dd_assets.spec.column_flow import seed_file_columns as seed_file_columns_ordered

    seed = tmp_path / "notes.csv"
    seed.write_text('"id","note, long"\n1,"a, b"\n2,c\n', encoding="utf-8")
    builder = dd.DataDesignerConfigBuilder()
    builder.with_seed_dataset(dd.LocalFileSeedSource(path=str(seed)))
    builder.add_column(dd.ExpressionColumnConfig(name="label", expr="{{ id }}!"))
    workflow = Workflow(name="csvseed", stages=[Stage(name="a", config=builder)])  # validated: `id` is in the seed
    assert seed_file_columns_ordered(workflow.stage("a")) == ["id", "note, long"]
    assert materialize(workflow, io_manager, instance).success
    assert io_manager.read_stage("csvseed", "a").columns == ["id", "note, long", "label"]


def test_an_expression_that_renders_true_or_false_without_dtype_says_so_before_any_run():
    builder = dd.DataDesignerConfigBuilder()
    builder.add_column(dd.SamplerColumnConfig(name="n", sampler_type="uniform", params={"low": 0, "high": 9}))
    builder.add_column(dd.ExpressionColumnConfig(name="big", expr="{{ n > 4 }}"))
    builder.add_column(dd.ExpressionColumnConfig(name="typed", expr="{{ n > 4 }}", dtype="bool"))
    builder.add_column(dd.ExpressionColumnConfig(name="word", expr="{{ 'big' if n > 4 else 'small' }}"))
    defs = build_workflow_definitions(Workflow(name="exprs", stages=[Stage(name="a", config=builder)]))
    columns = _schema(defs, ["exprs", "a"])
    assert columns["big"] == ("string", "expression: {{ n > 4 }} (text 'True'/'False': set dtype bool for booleans)")
    assert columns["typed"] == ("bool", "expression: {{ n > 4 }}")
    assert columns["word"] == ("string", "expression: {{ 'big' if n > 4 else 'small' }}")
