"""Parity: a linear workflow gives what Data Designer's own CompositeWorkflow.run() gives on the same stages."""

from __future__ import annotations

import data_designer.config as dd
import pandas as pd
from data_designer.interface import DataDesigner

from dd_assets import Stage, Workflow
from dd_assets_tests.helpers import materialize

DETERMINISTIC = ["sku", "title", "title_len", "slug", "label"]


def _stages(seed_path: str) -> list[dict]:
    first = dd.DataDesignerConfigBuilder().with_seed_dataset(dd.LocalFileSeedSource(path=seed_path))
    first.add_column(dd.ExpressionColumnConfig(name="title", expr="Item {{ sku }}"))
    first.add_column(dd.ExpressionColumnConfig(name="title_len", expr="{{ title | length }}", dtype="int"))
    first.add_column(
        dd.SamplerColumnConfig(name="price", sampler_type="uniform", params=dd.UniformSamplerParams(low=1, high=9))
    )
    second = dd.DataDesignerConfigBuilder()
    second.add_column(dd.ExpressionColumnConfig(name="slug", expr="{{ title | lower | replace(' ', '-') }}"))
    third = dd.DataDesignerConfigBuilder()
    third.add_column(dd.ExpressionColumnConfig(name="label", expr="{{ slug }}:{{ title_len }}"))
    return [
        {"name": "items", "config_builder": first, "num_records": 40},
        {
            "name": "slugs",
            "config_builder": second,
            "output_processors": [dd.DropColumnsProcessorConfig(name="drop_price", column_names=["price"])],
        },
        {"name": "labels", "config_builder": third},
    ]


def test_linear_workflow_matches_composite_workflow(tmp_path, io_manager, instance):
    seed = tmp_path / "skus.parquet"
    pd.DataFrame({"sku": [f"S{i:03d}" for i in range(40)]}).to_parquet(seed)

    composite = DataDesigner(artifact_path=tmp_path / "composite").compose_workflow(name="parity")
    for stage in _stages(str(seed)):
        composite.add_stage(
            stage["name"],
            stage["config_builder"],
            num_records=stage.get("num_records"),
            output_processors=stage.get("output_processors"),
        )
    results = composite.run()

    previous = None
    dagster_stages = []
    for stage in _stages(str(seed)):
        dagster_stages.append(
            Stage(
                name=stage["name"],
                config=stage["config_builder"],
                num_records=stage.get("num_records"),
                output_processors=stage.get("output_processors", ()),
                depends_on=[previous] if previous else [],
            )
        )
        previous = stage["name"]
    assert materialize(Workflow(name="parity", stages=dagster_stages), io_manager, instance).success

    for name in ("items", "slugs", "labels"):
        theirs = results.load_stage_output(name)
        ours = io_manager.read_stage("parity", name).to_pandas()
        assert len(ours) == len(theirs), name
        # Data Designer's async engine orders columns by cell completion, so compare them as sets.
        assert sorted(ours.columns) == sorted(theirs.columns), name
        shared = [c for c in DETERMINISTIC if c in theirs.columns]
        pd.testing.assert_frame_equal(
            ours[shared].astype(str).reset_index(drop=True), theirs[shared].astype(str).reset_index(drop=True)
        )
