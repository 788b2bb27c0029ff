"""Data Designer 0.9.7+ and 1.0: what each reports about a create(), and what dd_assets makes of it.

The suite runs whole on the default install (Data Designer 0.9.7) and, in .ci/run, its Data Designer subset (this
module among them; .ci/run lists them and says why) on 1.0. Where 1.0 reports an outcome publicly
(``actual_num_records``, ``is_partial``, ``early_shutdown``, ``effective_resume_mode``) dd_assets reads it; 0.9 does
not report early shutdown after a partial run, and these tests say so where they differ.
"""

from __future__ import annotations

import logging

import data_designer.config as dd
import pandas as pd
from packaging.version import Version

from dd_assets import DataDesignerResource, Stage, Workflow
from dd_assets.engine.data_designer_surface import installed_version
from dd_assets_tests.conftest import TEST_PROVIDER
from dd_assets_tests.helpers import failure_message, llm_builder, materialize, metadata_of

DATA_DESIGNER_1 = Version(installed_version()) >= Version("1.0.0rc1")


def _strict_resource(llm, **run_config) -> DataDesignerResource:
    """Data Designer's early shutdown on (its default), over a short window so a few failures trigger it."""
    return DataDesignerResource(
        model_providers=[{"name": TEST_PROVIDER, "endpoint": llm.endpoint, "api_key": "DD_ASSETS_TEST_API_KEY"}],
        run_config={
            "shutdown_error_window": 4,
            "shutdown_error_rate": 1.0,
            "max_conversation_restarts": 0,
            **run_config,
        },
    )


def _seeded(tmp_path, colors: list[str], **stage_fields) -> Workflow:
    path = tmp_path / "colors.parquet"
    pd.DataFrame({"n": list(range(len(colors))), "color": colors}).to_parquet(path)
    seed = llm_builder("text", "Write about {{ color }} {{ n }}").with_seed_dataset(
        dd.LocalFileSeedSource(path=str(path))
    )
    return Workflow(name="early", stages=[Stage(name="write", config=seed, **stage_fields)])


def _blue_fails(prompt: str):
    return (400, {"error": {"message": "bad request"}}) if "blue" in prompt else None


def test_an_early_shutdown_with_no_record_names_the_cause_the_model_and_the_way_out(
    io_manager, instance, llm, tmp_path
):
    llm.fault = _blue_fails
    wf = _seeded(tmp_path, ["blue"] * 8)
    result = materialize(wf, io_manager, instance, resource=_strict_resource(llm), raise_on_error=False)
    message = failure_message(result, "early", "write")
    assert (
        "workflow 'early', stage 'write': Data Designer shut generation down early before any record was finished "
        f"(model alias 'test-model' (model 'test-model') on provider {TEST_PROVIDER!r} at {llm.endpoint})" in message
    ), message
    assert "model requests failed: HTTP 400" in message  # the provider's reason, not "the warnings above"
    assert "at least 100% of the last 4" in message
    assert "disable_early_shutdown" in message and "🛑" not in message  # dd_assets' words, not a wrapped traceback
    assert io_manager.read_record("early", "write") is None


def test_a_partial_run_after_an_early_shutdown_says_so_on_data_designer_1(io_manager, instance, llm, tmp_path):
    llm.fault = _blue_fails
    colors = ["red"] * 4 + ["blue"] * 12
    wf = _seeded(tmp_path, colors, completion_threshold=0.1)
    resource = _strict_resource(llm, buffer_size=4, max_concurrent_row_groups=1)
    result = materialize(wf, io_manager, instance, resource=resource, raise_on_error=False)
    assert result.success, failure_message(result, "early", "write")
    metadata = metadata_of(result, ["early", "write"])
    assert 0 < metadata["dd_assets/num_records_actual"] < len(colors)
    warnings = [r.user_message for r in instance.all_logs(result.run_id) if r.level >= logging.WARNING]
    said = any("Data Designer shut generation down early after" in w for w in warnings)
    if DATA_DESIGNER_1:  # its results report early_shutdown: published partial data is flagged
        assert metadata["dd_assets/early_shutdown"] is True
        assert said
    else:  # 0.9 does not report it; the completion check still shows the shortfall
        assert "dd_assets/early_shutdown" not in metadata
        assert not said


def test_a_completion_failure_after_an_early_shutdown_names_it_on_data_designer_1(io_manager, instance, llm, tmp_path):
    llm.fault = _blue_fails
    colors = ["red"] * 4 + ["blue"] * 12
    wf = _seeded(tmp_path, colors)
    resource = _strict_resource(llm, buffer_size=4, max_concurrent_row_groups=1)
    result = materialize(wf, io_manager, instance, resource=resource, raise_on_error=False)
    message = failure_message(result, "early", "write")
    assert "below completion_threshold 0.95" in message, message
    assert ("Data Designer shut generation down early: at least 100%" in message) is DATA_DESIGNER_1
