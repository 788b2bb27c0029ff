"""The translator turns stages into AssetSpecs; code versions depend on the stage spec alone."""

from __future__ import annotations

import dagster as dg
import data_designer.config as dd

from dd_assets import DataDesignerStageTranslator, Stage, Workflow, build_workflow_definitions
from dd_assets_tests.helpers import expression_builder, sampler_builder


def _workflow(label_expr: str = "{{ color }}-{{ n }}", num_records: int = 20) -> Workflow:
    return Workflow(
        name="shop",
        stages=[
            Stage(name="base", config=sampler_builder(), num_records=num_records),
            Stage(name="labels", config=expression_builder("label", label_expr), depends_on=["base"]),
            Stage(name="upper", config=expression_builder("upper", "{{ color | upper }}"), depends_on=["base"]),
            Stage(
                name="joined",
                config=expression_builder("both", "{{ label }} {{ upper }}"),
                depends_on=["labels", "upper"],
                combine="zip",
                description="Labels and upper side by side.",
            ),
        ],
    )


def _specs(wf: Workflow) -> dict[str, dg.AssetSpec]:
    translator = DataDesignerStageTranslator()
    return {s.name: translator.get_asset_spec(wf, s) for s in wf.stages}


def test_asset_spec_fields():
    specs = _specs(_workflow())
    spec = specs["joined"]
    assert spec.key == dg.AssetKey(["shop", "joined"])
    assert spec.group_name == "shop"
    assert spec.kinds == {"data_designer", "parquet"}
    assert {d.asset_key for d in spec.deps} == {dg.AssetKey(["shop", "labels"]), dg.AssetKey(["shop", "upper"])}
    assert spec.description == "Labels and upper side by side."
    assert spec.metadata["dagster/io_manager_key"] == "dd_stage_io_manager"
    assert "label" in specs["labels"].description  # default description lists the generated columns


def test_external_asset_key_dependency_is_kept():
    wf = Workflow(
        name="w",
        stages=[
            Stage(name="s", config=expression_builder("x", "{{ text }}"), depends_on=[dg.AssetKey(["raw", "docs"])])
        ],
    )
    spec = _specs(wf)["s"]
    assert [d.asset_key for d in spec.deps] == [dg.AssetKey(["raw", "docs"])]


def test_code_version_is_stable_across_builds():
    assert {k: s.code_version for k, s in _specs(_workflow()).items()} == {
        k: s.code_version for k, s in _specs(_workflow()).items()
    }


def test_editing_one_stage_changes_only_its_code_version():
    before = {k: s.code_version for k, s in _specs(_workflow()).items()}
    after = {k: s.code_version for k, s in _specs(_workflow(label_expr="{{ n }}:{{ color }}")).items()}
    assert {k for k in before if before[k] != after[k]} == {"labels"}


def test_num_records_change_marks_only_that_stage():
    before = {k: s.code_version for k, s in _specs(_workflow()).items()}
    after = {k: s.code_version for k, s in _specs(_workflow(num_records=21)).items()}
    assert {k for k in before if before[k] != after[k]} == {"base"}


def test_seed_path_is_not_part_of_the_code_version(tmp_path):
    import pandas as pd

    versions = []
    for folder in ("one", "two"):
        path = tmp_path / folder / "seed.parquet"
        path.parent.mkdir()
        pd.DataFrame({"text": ["a", "b"]}).to_parquet(path)
        builder = expression_builder("upper", "{{ text | upper }}").with_seed_dataset(
            dd.LocalFileSeedSource(path=str(path))
        )
        wf = Workflow(name="w", stages=[Stage(name="s", config=builder)])
        versions.append(_specs(wf)["s"].code_version)
    assert versions[0] == versions[1]


def test_stage_options_change_the_code_version():
    base = Stage(name="s", config=sampler_builder())
    variants = [
        Stage(name="s", config=sampler_builder(), allow_empty=True),
        Stage(name="s", config=sampler_builder(), on_success_version="2"),
        Stage(
            name="s",
            config=sampler_builder(),
            output_processors=[dd.DropColumnsProcessorConfig(name="d", column_names=["color"])],
        ),
    ]
    versions = {_specs(Workflow(name="w", stages=[stage]))["s"].code_version for stage in [base, *variants]}
    assert len(versions) == 4


def test_description_does_not_change_the_code_version():
    a = _specs(Workflow(name="w", stages=[Stage(name="s", config=sampler_builder())]))["s"]
    b = _specs(Workflow(name="w", stages=[Stage(name="s", config=sampler_builder(), description="x")]))["s"]
    assert a.code_version == b.code_version


def test_translator_can_be_overridden():
    class Prefixed(DataDesignerStageTranslator):
        def get_asset_key(self, workflow, stage):
            return dg.AssetKey(["synthetic", workflow.name, stage.name])

    defs = build_workflow_definitions(_workflow(), translator=Prefixed())
    keys = {k for a in defs.assets for k in a.keys}
    assert dg.AssetKey(["synthetic", "shop", "joined"]) in keys
    joined = next(a for a in defs.assets if dg.AssetKey(["synthetic", "shop", "joined"]) in a.keys)
    assert (
        dg.AssetKey(["synthetic", "shop", "labels"]) in joined.asset_deps[dg.AssetKey(["synthetic", "shop", "joined"])]
    )


def test_definitions_validate_and_use_in_process_executor():
    defs = build_workflow_definitions(_workflow())
    dg.Definitions.validate_loadable(defs)
    assert defs.executor.name == "in_process"
    assert set(defs.resources) == {"data_designer", "dd_stage_io_manager"}


def test_duplicate_workflow_names_are_rejected():
    import pytest

    from dd_assets import WorkflowDefinitionError

    with pytest.raises(WorkflowDefinitionError, match="workflow 'shop', field 'name': two workflows have this name"):
        build_workflow_definitions([_workflow(), _workflow()])


def test_translator_sets_a_concurrency_pool():
    class Pooled(DataDesignerStageTranslator):
        def get_pool(self, workflow, stage):
            return "llm" if stage.name == "labels" else None

    defs = build_workflow_definitions(_workflow(), translator=Pooled())
    pools = {next(iter(a.keys)).path[1]: a.op.pool for a in defs.assets}
    assert pools["labels"] == "llm" and pools["base"] is None
