"""DataDesignerResource: one registry per process, one health check per alias, per-stage usage, secrets, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from dd_assets import DataDesignerResource, Stage, Workflow, WorkflowDefinitionError, build_workflow_definitions
from dd_assets.resource import ModelAliasConflictError, SharedRegistryDataDesigner
from dd_assets_tests.conftest import TEST_API_KEY_VALUE
from dd_assets_tests.helpers import (
    expression_builder,
    llm_builder,
    materialize,
    metadata_of,
    model_config,
    sampler_builder,
)


def _three_llm_stages(name: str) -> Workflow:
    return Workflow(
        name=name,
        stages=[
            Stage(name="base", config=sampler_builder(), num_records=4),
            Stage(name="one", config=llm_builder("first", "Describe {{ color }}"), depends_on=["base"]),
            Stage(name="two", config=llm_builder("second", "Explain {{ first }}"), depends_on=["one"], num_records=3),
            Stage(
                name="three", config=llm_builder("third", "Summarize {{ second }}"), depends_on=["two"], num_records=2
            ),
        ],
    )


def test_three_llm_stages_share_one_health_check_and_report_own_usage(io_manager, instance, llm, llm_resource):
    result = materialize(_three_llm_stages("shared"), io_manager, instance, resource=llm_resource)
    assert result.success
    assert llm.count("health_check") == 1
    assert llm.count("generation") == 4 + 3 + 2
    for stage, rows in (("one", 4), ("two", 3), ("three", 2)):
        usage = metadata_of(result, ["shared", stage])["dd_assets/model_usage"]
        assert usage["test-model"]["successful_requests"] == rows, (stage, usage)
        assert usage["test-model"]["input_tokens"] > 0
    assert metadata_of(result, ["shared", "base"])["dd_assets/model_usage"] == {}


def test_health_check_runs_once_per_alias_per_process_across_runs(io_manager, instance, llm, llm_resource):
    materialize(_three_llm_stages("first_run"), io_manager, instance, resource=llm_resource)
    llm.reset()
    materialize(_three_llm_stages("second_run"), io_manager, instance, resource=llm_resource)
    assert llm.count("health_check") == 0
    assert llm.count("generation") == 9


def test_llm_output_is_what_the_server_answered(io_manager, instance, llm, llm_resource):
    from dd_assets_tests.llm_server import FakeLLMServer

    materialize(_three_llm_stages("answers"), io_manager, instance, resource=llm_resource)
    one = io_manager.read_stage("answers", "one").to_pandas()
    assert list(one["first"]) == [FakeLLMServer.answer_for(f"Describe {c}") for c in one["color"]]


def test_conflicting_alias_across_stages_fails_at_definitions_load():
    with pytest.raises(WorkflowDefinitionError) as info:
        Workflow(
            name="clash",
            stages=[
                Stage(name="a", config=llm_builder("x", "Say {{ n }}", alias="m", model="model-a")),
                Stage(name="b", config=llm_builder("y", "Say {{ n }}", alias="m", model="model-b")),
            ],
        )
    message = str(info.value)
    assert "workflow 'clash', stage 'b', field 'config.model_configs'" in message
    assert "model alias 'm' is defined differently by workflow 'clash', stage 'a'" in message


def test_shared_registry_refuses_a_conflicting_alias_at_run_time(llm_resource):
    data_designer = llm_resource.get_data_designer()
    assert isinstance(data_designer, SharedRegistryDataDesigner)
    data_designer.shared_registry.register_stage_models([model_config("rt-alias", "model-a")], owner="stage one")
    data_designer.shared_registry.register_stage_models([model_config("rt-alias", "model-a")], owner="stage two")
    with pytest.raises(ModelAliasConflictError, match="'rt-alias' is defined differently by stage one"):
        data_designer.shared_registry.register_stage_models([model_config("rt-alias", "model-b")], owner="stage three")


def test_same_configuration_gives_one_data_designer_per_process(llm_resource):
    again = DataDesignerResource(model_providers=llm_resource.model_providers)
    assert again.get_data_designer() is llm_resource.get_data_designer()
    assert again.get_data_designer().shared_registry is llm_resource.get_data_designer().shared_registry


def test_unconfigured_provider_fails_before_any_request(io_manager, instance, llm):
    resource = DataDesignerResource(
        model_providers=[{"name": "elsewhere", "endpoint": llm.endpoint, "api_key": "x"}], setup_hint="Set FOO."
    )
    wf = Workflow(
        name="noprov",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=2),
            Stage(name="a", config=llm_builder("x", "Hi {{ n }}"), depends_on=["seed"]),
        ],
    )
    result = materialize(wf, io_manager, instance, resource=resource, raise_on_error=False)
    message = result.failure_data_for_node("noprov__a").error.message
    assert "workflow 'noprov', stage 'a': model alias 'test-model' uses provider 'test_llm'" in message
    assert "configured: elsewhere" in message and "Set FOO." in message
    assert llm.count() == 0


def _all_text_under(path: Path) -> str:
    chunks = []
    for file in path.rglob("*"):
        if file.is_file():
            chunks.append(file.read_bytes().decode("utf-8", errors="ignore"))
    return "\n".join(chunks)


def test_api_key_never_reaches_metadata_logs_or_artifacts(io_manager, instance, llm, llm_resource, tmp_path):
    result = materialize(_three_llm_stages("secret"), io_manager, instance, resource=llm_resource)
    assert f"Bearer {TEST_API_KEY_VALUE}" in llm.auth_headers  # the key was used...
    logs = "\n".join(repr(e) for e in instance.all_logs(result.run_id))
    assert "[secret/one]" in logs  # Data Designer's own log lines are in the event log
    metadata = json.dumps(
        [{k: str(v) for k, v in e.materialization.metadata.items()} for e in result.get_asset_materialization_events()]
    )
    stored = _all_text_under(Path(io_manager.base_dir))
    for where, text in {"event log": logs, "metadata": metadata, "storage": stored}.items():
        assert TEST_API_KEY_VALUE not in text, where


def test_offline_defaults():
    resource = DataDesignerResource()
    assert resource.data_designer_run_config().otel_metrics_port is None
    assert (
        DataDesignerResource(run_config={"otel_metrics_port": 9999}).data_designer_run_config().otel_metrics_port
        == 9999
    )
    assert DataDesignerResource(run_config={"buffer_size": 7}).data_designer_run_config().buffer_size == 7
    from data_designer.engine.models import telemetry

    assert os.environ["NEMO_TELEMETRY_ENABLED"] == "false"
    assert telemetry.TELEMETRY_ENABLED is False


def test_token_statistics_are_off_without_network(io_manager, instance, llm, llm_resource):
    from data_designer.engine.analysis.utils import column_statistics_calculations as calc

    result = materialize(_three_llm_stages("tokens"), io_manager, instance, resource=llm_resource)
    assert calc.count_text_tokens.__name__ == "_count_tokens_disabled"
    stats = metadata_of(result, ["tokens", "one"])["dd_assets/column_statistics"]["first"]
    assert stats.get("output_tokens_mean") in ("--", None, "CALCULATION_FAILED") or "output_tokens_mean" not in stats


def test_bad_run_config_field_is_a_clear_error():
    with pytest.raises(Exception, match="buffer_size"):
        DataDesignerResource(run_config={"buffer_size": "lots"}).data_designer_run_config()


def test_definitions_with_resource_validate():
    defs = build_workflow_definitions(
        Workflow(name="v", stages=[Stage(name="a", config=expression_builder("x", "1"), num_records=1)]),
        data_designer=DataDesignerResource(model_providers=[{"name": "p", "endpoint": "http://127.0.0.1:1/v1"}]),
    )
    dg.Definitions.validate_loadable(defs)


def test_conflicting_alias_across_workflows_fails_at_definitions_load():
    one = Workflow(name="w1", stages=[Stage(name="a", config=llm_builder("x", "Say hi", alias="m", model="model-a"))])
    two = Workflow(name="w2", stages=[Stage(name="b", config=llm_builder("y", "Say hi", alias="m", model="model-b"))])
    with pytest.raises(WorkflowDefinitionError, match="workflow 'w2', stage 'b'.*defined differently by workflow 'w1'"):
        build_workflow_definitions([one, two])


def test_default_provider_keys_are_redacted(monkeypatch):
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-should-never-be-logged")
    assert "nvapi-should-never-be-logged" in DataDesignerResource().secret_values()
