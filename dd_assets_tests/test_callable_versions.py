"""Callables that shape a stage's output enter its code version and work key by their code (issue 15, item 1).

Data Designer serializes a custom column's generator by its bare name, so editing its body used to leave the code
version and the work key alone: the UI kept the stage synced and a rerun resumed old-code batches into new-code ones.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import data_designer.config as dd
import pytest

from dd_assets import Stage, Workflow, versioned
from dd_assets.spec.callable_identity import Unidentifiable, callable_identity
from dd_assets.spec.versioning import generation_inputs, generation_work_key, stage_code_version
from dd_assets_tests.helpers import FailOnce, materialize, metadata_of, sampler_builder

GENERATOR = """
import data_designer.config as dd

FACTOR = {factor}


def helper(n):
    return n * {helper_factor}


@dd.custom_column_generator(required_columns=["n"])
def derive(row):
{blank}    row["derived"] = helper(row["n"]) * FACTOR {plus}
    return row
"""


class EditableModule:
    """A module file of the test's own that can be edited and reloaded under the same name, as a user would."""

    def __init__(self, tmp_path: Path):
        self.name = f"dd_gen_{uuid.uuid4().hex[:8]}"
        self.path = tmp_path / f"{self.name}.py"

    def load(self, *, factor: int = 1, helper_factor: int = 2, plus: str = "", blank: str = ""):
        text = GENERATOR.format(factor=factor, helper_factor=helper_factor, plus=plus, blank=blank)
        self.path.write_text(textwrap.dedent(text))
        sys.dont_write_bytecode = True  # no stale .pyc for an edit within the same second
        spec = importlib.util.spec_from_file_location(self.name, self.path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[self.name] = module
        spec.loader.exec_module(module)
        return module


def _custom_builder(generator) -> dd.DataDesignerConfigBuilder:
    builder = dd.DataDesignerConfigBuilder()
    builder.add_column(dd.CustomColumnConfig(name="derived", generator_function=generator))
    return builder


def _workflow(generator, records: int = 12, **fields) -> Workflow:
    """``seed`` (``records`` sampler rows) -> ``derive`` (the custom column ``generator``, with ``fields``)."""
    return Workflow(
        name="gen",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=records),
            Stage(name="derive", config=_custom_builder(generator), depends_on=["seed"], **fields),
        ],
    )


def _stage(generator, **fields) -> Stage:
    return _workflow(generator, **fields).stage("derive")


def _work_key(stage: Stage) -> str:
    return generation_work_key(generation_inputs(stage, seed_fingerprint="s", num_records=12, run_settings={}))


def test_editing_a_custom_column_body_changes_the_code_version_and_the_work_key(tmp_path):
    module = EditableModule(tmp_path)
    before = _stage(module.load().derive)
    after = _stage(module.load(plus="+ 1").derive)  # same name, qualname and module; another body
    assert after.builder.get_column_configs()[0].generator_function.__qualname__ == "derive"
    assert stage_code_version(before) != stage_code_version(after)
    assert _work_key(before) != _work_key(after)


def test_a_helper_or_a_constant_the_generator_reads_is_part_of_its_code(tmp_path):
    module = EditableModule(tmp_path)
    base = _stage(module.load().derive)
    assert stage_code_version(_stage(module.load(helper_factor=3).derive)) != stage_code_version(base)
    assert stage_code_version(_stage(module.load(factor=5).derive)) != stage_code_version(base)


def test_moving_code_without_changing_it_keeps_the_versions(tmp_path):
    module = EditableModule(tmp_path)
    before = _stage(module.load().derive)
    moved = _stage(module.load(blank="\n\n").derive)  # the body starts two lines lower
    assert stage_code_version(before) == stage_code_version(moved)
    assert _work_key(before) == _work_key(moved)


def test_a_versioned_callable_is_identified_by_its_version_alone(tmp_path):
    module = EditableModule(tmp_path)
    one = _stage(versioned("1")(module.load().derive))
    edited = _stage(versioned("1")(module.load(plus="+ 1").derive))
    two = _stage(versioned("2")(module.load(plus="+ 1").derive))
    assert stage_code_version(one) == stage_code_version(edited)
    assert stage_code_version(one) != stage_code_version(two)
    with pytest.raises(ValueError, match="non-empty string"):
        versioned("")


def test_closures_differ_by_what_they_capture():
    def make(factor):
        @dd.custom_column_generator(required_columns=["n"])
        def derive(row):
            row["derived"] = row["n"] * factor
            return row

        return derive

    assert stage_code_version(_stage(make(2))) != stage_code_version(_stage(make(3)))
    assert stage_code_version(_stage(make(2))) == stage_code_version(_stage(make(2)))


def test_combine_and_on_success_callables_enter_the_code_version_by_their_code():
    def combine_a(upstreams):
        return upstreams["a"].to_pandas()

    def combine_b(upstreams):
        return upstreams["b"].to_pandas()

    def on_success_a(path):
        return path / "parquet-files"

    def on_success_b(path):
        return path / "processors-files"

    for fn in (combine_b, on_success_b):  # same names as the "a" versions, other bodies
        fn.__name__, fn.__qualname__ = fn.__name__[:-1] + "a", fn.__qualname__[:-1] + "a"

    def workflow(combine, on_success, on_success_version=None) -> Workflow:
        return Workflow(
            name="j",
            stages=[
                Stage(name="a", config=sampler_builder(), num_records=2),
                Stage(name="b", config=sampler_builder(), num_records=2),
                Stage(
                    name="j",
                    config=_custom_builder(_double),
                    depends_on=["a", "b"],
                    combine=combine,
                    on_success=on_success,
                    on_success_version=on_success_version,
                ),
            ],
        )

    base = stage_code_version(workflow(combine_a, on_success_a).stage("j"))
    assert stage_code_version(workflow(combine_b, on_success_a).stage("j")) != base
    assert stage_code_version(workflow(combine_a, on_success_b).stage("j")) != base
    # an on_success_version stands for the callback's code: editing the body under one version changes nothing
    assert stage_code_version(workflow(combine_a, on_success_a, "1").stage("j")) == stage_code_version(
        workflow(combine_a, on_success_b, "1").stage("j")
    )


@dd.custom_column_generator(required_columns=["n"])
def _double(row):
    row["derived"] = row["n"] * 2
    return row


def test_a_local_validation_function_enters_the_code_version():
    def check_a(df):
        return df.assign(is_valid=True)

    def check_b(df):
        return df.assign(is_valid=df["n"] > 0)

    check_b.__name__ = check_b.__qualname__ = check_a.__qualname__

    def stage(fn) -> Stage:
        builder = sampler_builder()
        builder.add_column(
            dd.ValidationColumnConfig(
                name="valid",
                target_columns=["n"],
                validator_type="local_callable",
                validator_params=dd.LocalCallableValidatorParams(validation_function=fn),
            )
        )
        return Workflow(name="v", stages=[Stage(name="v", config=builder, num_records=2)]).stage("v")

    assert stage_code_version(stage(check_a)) != stage_code_version(stage(check_b))


def test_a_callable_that_captures_an_object_is_unidentifiable_and_its_work_never_repeats():
    lock = threading.Lock()

    @dd.custom_column_generator(required_columns=["n"])
    def derive(row):
        with lock:
            row["derived"] = row["n"]
        return row

    with pytest.raises(Unidentifiable, match="captures 'lock'"):
        callable_identity(derive)
    stage = _stage(derive)
    assert _work_key(stage) != _work_key(stage)  # each run starts fresh
    assert stage_code_version(stage) == stage_code_version(stage)  # loading twice still gives one version


def test_a_custom_column_edit_never_resumes_old_rows(tmp_path, io_manager, instance):
    module = EditableModule(tmp_path)

    def workflow(generator) -> Workflow:
        return _workflow(generator, on_success=failing, on_success_version="1")

    failing = FailOnce()
    materialize(workflow(module.load().derive), io_manager, instance, raise_on_error=False)  # derive fails late
    assert io_manager.read_record("gen", "derive") is None
    result = materialize(workflow(module.load(plus="+ 1").derive), io_manager, instance, selection="gen/derive")
    metadata = metadata_of(result, ["gen", "derive"])
    assert metadata["dd_assets/resumed"] is False
    rows = io_manager.read_stage("gen", "derive").to_pandas()
    assert len(rows) == 12
    assert (rows["derived"] == rows["n"] * 2 + 1).all()  # every row from the edited code, none from the old


def test_an_unidentifiable_generator_never_resumes_and_says_why(tmp_path, io_manager, instance):
    lock = threading.Lock()

    @dd.custom_column_generator(required_columns=["n"])
    def derive(row):
        with lock:
            row["derived"] = row["n"]
        return row

    workflow = _workflow(derive, records=6, on_success=FailOnce(), on_success_version="1")
    materialize(workflow, io_manager, instance, raise_on_error=False)
    result = materialize(workflow, io_manager, instance, selection="gen/derive")
    assert metadata_of(result, ["gen", "derive"])["dd_assets/resumed"] is False
    logs = "\n".join(e.user_message for e in instance.all_logs(result.run_id) if e.user_message)
    assert "captures 'lock'" in logs and "never resumes" in logs and "dd_assets.versioned" in logs
