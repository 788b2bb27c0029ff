"""The spec rejects bad workflows when they are built, naming the workflow, the stage and the field."""

from __future__ import annotations

import dagster as dg
import data_designer.config as dd
import pytest

from dd_assets import Stage, Workflow, WorkflowDefinitionError
from dd_assets_tests.helpers import expression_builder, sampler_builder


def _error(stages, name="wf") -> WorkflowDefinitionError:
    with pytest.raises(WorkflowDefinitionError) as info:
        Workflow(name=name, stages=stages)
    return info.value


def test_valid_workflow_orders_stages_topologically():
    wf = Workflow(
        name="wf",
        stages=[
            Stage(name="c", config=expression_builder("z", "{{ n }}"), depends_on=["a", "b"], combine="concat"),
            Stage(name="b", config=expression_builder("y", "{{ n }}"), depends_on=["a"]),
            Stage(name="a", config=sampler_builder()),
        ],
    )
    assert [s.name for s in wf.topological_order()] == ["a", "b", "c"]


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "..", "dots.dots", "ünï"])
def test_invalid_stage_names_are_rejected(bad):
    err = _error([Stage(name=bad, config=sampler_builder())])
    assert "workflow 'wf'" in str(err) and "field 'name'" in str(err) and repr(bad) in str(err)


@pytest.mark.parametrize("bad", ["", "a b", "x/y", ".."])
def test_invalid_workflow_names_are_rejected(bad):
    err = _error([Stage(name="a", config=sampler_builder())], name=bad)
    assert "workflow name" in str(err) and "field 'name'" in str(err)


def test_duplicate_stage_is_rejected():
    err = _error([Stage(name="a", config=sampler_builder()), Stage(name="a", config=sampler_builder())])
    assert str(err) == "workflow 'wf', stage 'a', field 'name': duplicate stage name"


def test_unknown_upstream_is_rejected():
    err = _error(
        [Stage(name="a", config=sampler_builder()), Stage(name="b", config=sampler_builder(), depends_on=["x"])]
    )
    assert "stage 'b'" in str(err) and "field 'depends_on'" in str(err) and "unknown upstream stage 'x'" in str(err)


def test_cycle_is_rejected_and_named():
    err = _error(
        [
            Stage(name="a", config=sampler_builder(), depends_on=["c"]),
            Stage(name="b", config=sampler_builder(), depends_on=["a"]),
            Stage(name="c", config=sampler_builder(), depends_on=["b"]),
        ]
    )
    assert "dependency cycle" in str(err)
    assert "a -> b -> c -> a" in str(err)
    assert err.field == "depends_on"


def test_self_dependency_is_rejected():
    err = _error([Stage(name="a", config=sampler_builder(), depends_on=["a"])])
    assert "cannot depend on itself" in str(err)


def test_output_processor_that_does_not_exist_is_rejected():
    err = _error([Stage(name="a", config=sampler_builder(), output="processor:chatml")])
    assert "field 'output'" in str(err) and "no processor named 'chatml'" in str(err)


def test_output_processor_defined_in_output_processors_is_accepted():
    Workflow(
        name="wf",
        stages=[
            Stage(
                name="a",
                config=sampler_builder(),
                output_processors=[dd.DropColumnsProcessorConfig(name="drop", column_names=["color"])],
                output="processor:drop",
            )
        ],
    )


def test_bad_output_value_is_rejected():
    err = _error([Stage(name="a", config=sampler_builder(), output="last")])
    assert "field 'output'" in str(err)


def test_several_upstreams_without_combine_are_rejected():
    err = _error(
        [
            Stage(name="a", config=sampler_builder()),
            Stage(name="b", config=sampler_builder()),
            Stage(name="c", config=expression_builder("x", "{{ n }}"), depends_on=["a", "b"]),
        ]
    )
    assert "stage 'c'" in str(err) and "field 'combine'" in str(err)


def test_external_asset_key_and_stage_mix_needs_combine():
    err = _error(
        [
            Stage(name="a", config=sampler_builder()),
            Stage(name="c", config=expression_builder("x", "{{ n }}"), depends_on=["a", dg.AssetKey(["raw", "docs"])]),
        ]
    )
    assert "field 'combine'" in str(err)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "10"])
def test_num_records_must_be_a_positive_integer(bad):
    err = _error([Stage(name="a", config=sampler_builder(), num_records=bad)])
    assert "field 'num_records'" in str(err) and "positive integer" in str(err)


def test_bad_combine_value_is_rejected():
    err = _error(
        [
            Stage(name="a", config=sampler_builder()),
            Stage(name="b", config=sampler_builder()),
            Stage(name="c", config=expression_builder("x", "{{ n }}"), depends_on=["a", "b"], combine="merge"),
        ]
    )
    assert "field 'combine'" in str(err)


def test_missing_config_file_is_rejected(tmp_path):
    err = _error([Stage(name="a", config=tmp_path / "nope.yaml")])
    assert "field 'config'" in str(err) and "nope.yaml" in str(err)


def test_config_data_designer_rejects_is_mapped_to_the_stage():
    err = _error([Stage(name="a", config={"columns": [{"name": "x", "column_type": "sampler"}]})])
    assert "stage 'a'" in str(err) and "field 'config'" in str(err) and "invalid Data Designer config" in str(err)


def test_config_accepts_dict_built_config_and_file(tmp_path):
    builder = sampler_builder()
    path = tmp_path / "stage.yaml"
    builder.write_config(path)
    as_dict = builder.get_builder_config().model_dump(mode="json")
    wf = Workflow(
        name="wf",
        stages=[
            Stage(name="builder", config=builder),
            Stage(name="built", config=builder.build()),
            Stage(name="mapping", config=as_dict),
            Stage(name="file", config=path),
            Stage(name="file_str", config=str(path)),
        ],
    )
    columns = {s.name: [c.name for c in s.builder.get_column_configs()] for s in wf.stages}
    assert set(map(tuple, columns.values())) == {("n", "color")}


def test_bad_strategies_are_rejected():
    err = _error([Stage(name="a", config=sampler_builder(), sampling_strategy="random")])
    assert "field 'sampling_strategy'" in str(err)
    err = _error([Stage(name="a", config=sampler_builder(), selection_strategy={"start": 0})])
    assert "field 'selection_strategy'" in str(err)


def test_output_processor_names_must_be_distinct():
    drop = dd.DropColumnsProcessorConfig(name="drop", column_names=["color"])
    err = _error([Stage(name="a", config=sampler_builder(), output_processors=[drop, drop])])
    assert "field 'output_processors'" in str(err)


def test_user_builder_is_not_mutated_by_validation():
    builder = sampler_builder()
    stage = Stage(name="a", config=builder)
    Workflow(name="wf", stages=[stage])
    assert stage.builder is not builder
    assert builder.get_seed_config() is None
