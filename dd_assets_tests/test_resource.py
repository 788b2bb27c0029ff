"""DataDesignerResource: one registry per process, one health check per alias, per-stage usage, secrets, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from dd_assets import DataDesignerResource, Stage, Workflow, WorkflowDefinitionError, build_workflow_definitions
from dd_assets.engine.shared_data_designer import SharedRegistryDataDesigner
from dd_assets.engine.shared_registry import ModelAliasConflictError
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
    # its own DataDesigner (another run config): other tests' health checks in this process do not count
    resource = DataDesignerResource(model_providers=llm_resource.model_providers, run_config={"buffer_size": 999})
    result = materialize(_three_llm_stages("shared"), io_manager, instance, resource=resource)
    assert result.success
    assert llm.count("health_check") == 1
    assert llm.count("generation") == 4 + 3 + 2
    for stage, rows in (("one", 4), ("two", 3), ("three", 2)):
        usage = metadata_of(result, ["shared", stage])["dd_assets/model_usage"]
        assert usage["test-model"]["successful_requests"] == rows, (stage, usage)
        assert usage["test-model"]["input_tokens"] > 0
    assert "dd_assets/model_usage" not in metadata_of(result, ["shared", "base"])  # no model, no empty {}


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
        model_providers=[{"name": "elsewhere", "endpoint": llm.endpoint, "api_key": "DD_ASSETS_TEST_API_KEY"}],
        setup_hint="Set FOO.",
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


def _network_audit(llm, tmp_path, *, token_statistics: bool, telemetry: str | None = None) -> dict:
    """Run the audit fixture in a fresh process: NEMO_TELEMETRY_ENABLED is unset unless ``telemetry`` is given."""
    env = {k: v for k, v in os.environ.items() if k != "NEMO_TELEMETRY_ENABLED"}
    env.update(DATA_DESIGNER_HOME=str(tmp_path / "dd_home"), TIKTOKEN_CACHE_DIR=str(tmp_path / "tiktoken"))
    if telemetry is not None:
        env["NEMO_TELEMETRY_ENABLED"] = telemetry
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "fixtures" / "network_audit.py"),
            llm.endpoint,
            str(int(token_statistics)),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_run_reaches_no_host_but_the_model_endpoint_by_default(llm, tmp_path):
    report = _network_audit(llm, tmp_path, token_statistics=False)
    assert report["telemetry_enabled"] is False  # with NEMO_TELEMETRY_ENABLED unset in that process
    assert report["remote_hosts"] == []  # no telemetry, no tokenizer download, no metrics port lookups
    stats = report["stats"]
    assert stats["num_unique"] == 3  # column statistics are computed ...
    assert {stats[f"{kind}_tokens_{m}"] for kind in ("input", "output") for m in ("mean", "median", "stddev")} == {
        "--"
    }  # ... except token counts, recorded as not calculated


def test_token_statistics_turned_on_fetch_the_tokenizer(llm, tmp_path):
    # the control for the test above: the audit does see the tokenizer download when asked for
    report = _network_audit(llm, tmp_path, token_statistics=True)
    assert "openaipublic.blob.core.windows.net" in report["remote_hosts"]


def test_telemetry_can_be_turned_on_before_import(llm, tmp_path):
    assert _network_audit(llm, tmp_path, token_statistics=False, telemetry="true")["telemetry_enabled"] is True


def test_run_config_defaults():
    assert DataDesignerResource().data_designer_run_config().otel_metrics_port is None
    assert (
        DataDesignerResource(run_config={"otel_metrics_port": 9999}).data_designer_run_config().otel_metrics_port
        == 9999
    )
    assert DataDesignerResource(run_config={"buffer_size": 7}).data_designer_run_config().buffer_size == 7


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


def test_the_installed_data_designer_passes_the_compatibility_guard_and_others_fail_it():
    from dd_assets.engine.data_designer_surface import (
        EXPECTED_CREATE_RESOURCE_PROVIDER_PARAMETERS,
        REGISTRY_METHODS_USED,
        DataDesignerCompatibilityError,
        check_data_designer_compatibility,
        compatibility_problems,
    )

    check_data_designer_compatibility()  # what is installed is what the override was written against
    parameters, methods = list(EXPECTED_CREATE_RESOURCE_PROVIDER_PARAMETERS), set(REGISTRY_METHODS_USED)
    for supported in ("0.9.7", "0.9.8", "1.0.0rc1", "1.0.0", "1.0.3"):  # both lines, 1.0's release candidates too
        assert compatibility_problems(supported, parameters, methods) == [], supported
    for refused in ("0.9.6", "0.9.7rc1", "1.1.0rc1", "1.1.0", "2.0.0"):  # 0.9.6 lacks the fork-safety fix
        assert compatibility_problems(refused, parameters, methods) == [
            f"data-designer {refused} is installed; dd_assets supports <1.1,>=0.9.7"
        ]
    problems = compatibility_problems("0.9.8", ["self", "dataset_name", "config_builder", "resume"], set())
    assert problems[0].startswith(
        "DataDesigner._create_resource_provider takes (self, dataset_name, config_builder, resume)"
    )
    assert problems[1].startswith("ModelRegistry lacks register_model_configs")
    assert issubclass(DataDesignerCompatibilityError, ImportError)


def test_the_shared_registry_holds_only_the_models_stages_use(io_manager, instance, llm, llm_resource):
    materialize(_three_llm_stages("only_used"), io_manager, instance, resource=llm_resource)
    registry = llm_resource.get_data_designer().shared_registry
    assert set(registry.model_configs) <= {"test-model", "rt-alias"}  # no Data Designer default models


def test_code_versions_do_not_depend_on_the_machines_data_designer_home(tmp_path):
    script = (
        "from dd_assets.examples.quickstart import quickstart_workflow\n"
        "from dd_assets.assets.translator import DataDesignerStageTranslator\n"
        "wf, t = quickstart_workflow(), DataDesignerStageTranslator()\n"
        "print({s.name: t.get_code_version(wf, s) for s in wf.stages})\n"
    )
    edited = tmp_path / "edited_home"
    edited.mkdir()
    (edited / "model_configs.yaml").write_text(
        "model_configs:\n  - {alias: my-default, model: some/model, provider: nvidia}\n"
    )
    versions = []
    for home in (tmp_path / "fresh_home", edited):
        env = {**os.environ, "DATA_DESIGNER_HOME": str(home)}
        env.pop("DATA_DESIGNER_MANAGED_ASSETS_PATH", None)
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        versions.append(proc.stdout.strip().splitlines()[-1])
    assert versions[0] == versions[1]


def test_running_a_stage_creates_nothing_in_the_working_directory(tmp_path, llm):
    script = (
        "import dagster as dg\n"
        "from dd_assets import Stage, Workflow, StageParquetIOManager\n"
        "from dd_assets_tests.helpers import materialize, sampler_builder\n"
        "wf = Workflow(name='cwd', stages=[Stage(name='a', config=sampler_builder(), num_records=2)])\n"
        f"io = StageParquetIOManager(base_dir={str(tmp_path / 'elsewhere')!r})\n"
        "with dg.DagsterInstance.ephemeral() as instance:\n"
        "    assert materialize(wf, io, instance).success\n"
    )
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(workdir.iterdir()) == []  # no ./artifacts from Data Designer's default artifact path


def test_each_resource_keeps_its_own_token_statistics_setting(io_manager, instance, llm, llm_resource, tmp_path):
    """Two resources in one process: the one built last must not switch the other's token statistics."""
    on = DataDesignerResource(
        model_providers=llm_resource.model_providers, token_statistics=True, run_config={"buffer_size": 97}
    )
    off = DataDesignerResource(
        model_providers=llm_resource.model_providers, token_statistics=False, run_config={"buffer_size": 89}
    )
    on.get_data_designer()
    off.get_data_designer()  # built last
    disabled = "token statistics are off"

    def logs_of(resource, name):
        workflow = Workflow(
            name=name,
            stages=[
                Stage(name="seed", config=sampler_builder(), num_records=2),
                Stage(name="write", config=llm_builder("text", "About {{ n }}"), depends_on=["seed"]),
            ],
        )
        result = materialize(workflow, io_manager, instance, resource=resource)
        return "\n".join(str(e.message) for e in instance.all_logs(result.run_id) if e.message)

    # asked to count (its tokenizer download is refused by the suite's network guard, see conftest.py)
    assert disabled not in logs_of(on, "stats_on")
    assert disabled in logs_of(off, "stats_off")


def test_a_keyless_provider_and_null_config_values_load_and_materialize(io_manager, instance, llm, tmp_path):
    # "api_key": None (a keyless endpoint) and None values of free-form mappings are valid config, not a Dagster
    # CheckError ("Null map member not caught in validation") when definitions load or a run starts
    llm.auth_headers.clear()
    resource = DataDesignerResource(
        model_providers=[{"name": "test_llm", "endpoint": llm.endpoint, "api_key": None, "extra_body": None}],
        run_config={"buffer_size": 998, "otel_metrics_port": None},
    )
    wf = Workflow(
        name="keyless",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=2),
            Stage(name="a", config=llm_builder("x", "Hi {{ n }}"), depends_on=["seed"]),
        ],
    )
    defs = build_workflow_definitions(wf, data_designer=resource, io_manager=io_manager)
    dg.Definitions.validate_loadable(defs)
    result = materialize(wf, io_manager, instance, resource=resource)
    assert result.success
    assert llm.count("generation") == 2 and llm.auth_headers == {""}  # no Authorization header was sent


def test_a_process_keeps_a_bounded_number_of_shared_data_designers():
    from dd_assets.engine import resource as resource_module

    first = DataDesignerResource(run_config={"buffer_size": 1001})
    kept = first.get_data_designer()
    assert DataDesignerResource(run_config={"buffer_size": 1001}).get_data_designer() is kept  # one per configuration
    for size in range(resource_module.MAX_DATA_DESIGNERS + 4):
        DataDesignerResource(run_config={"buffer_size": 2000 + size}).get_data_designer()
    assert len(resource_module._DATA_DESIGNERS) <= resource_module.MAX_DATA_DESIGNERS
    assert first.get_data_designer() is not kept  # the least recently used one was let go, and is built anew


def test_every_private_data_designer_surface_is_listed_beside_the_version_check_and_checked():
    """One list (dd_assets.engine.data_designer_surface) names every private part of Data Designer dd_assets uses: each
    engine, config.utils or default-settings import of any module of the package is on it, the installed version has
    all of it, and a missing or changed part is named when dd_assets is imported."""
    import ast

    import dd_assets
    from dd_assets.engine.data_designer_surface import PRIVATE_SURFACES, PrivateSurface, surface_problems

    assert surface_problems() == []  # the installed Data Designer (0.9 or 1.0) has every import-checked part
    names = [s.name for s in PRIVATE_SURFACES]
    unlisted = []
    private = ("data_designer.engine", "data_designer.config.utils", "data_designer.config.default_model_settings")
    package = Path(dd_assets.__file__).parent
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            for alias in node.names:
                if not f"{node.module}.{alias.name}".startswith(private):
                    continue
                listed = any(
                    n.startswith((f"{node.module}:{alias.name}", f"{node.module}.{alias.name}:")) for n in names
                )
                if not listed:
                    unlisted.append(f"{path.relative_to(package)}: from {node.module} import {alias.name}")
    assert unlisted == [], f"private Data Designer imports missing from PRIVATE_SURFACES: {unlisted}"

    missing = PrivateSurface("data_designer.engine.models.registry:ModelRegistry.gone", "a test")
    changed = PrivateSurface(
        "data_designer.interface.data_designer:DataDesigner._create_resource_provider", "a test", parameters=("self",)
    )
    problems = surface_problems((missing, changed))
    assert problems[0] == "data_designer.engine.models.registry:ModelRegistry.gone is missing (used by a test)"
    assert problems[1].startswith(
        "data_designer.interface.data_designer:DataDesigner._create_resource_provider takes (self, dataset_name"
    )


def test_the_data_designer_attributes_dd_assets_replaces_are_marked_in_the_list():
    """The module attributes dd_assets sets to its own switches, process-wide, are exactly those marked replaced."""
    from dd_assets.engine.data_designer_surface import PRIVATE_SURFACES, lookup
    from dd_assets.engine.dd_home import install_home_seeding_switch
    from dd_assets.engine.token_statistics import install_token_statistics_switch

    install_home_seeding_switch()
    install_token_statistics_switch()
    ours = {
        s.name
        for s in PRIVATE_SURFACES
        if s.at_import and (getattr(lookup(s.name), "__module__", None) or "").startswith("dd_assets")
    }
    assert ours == {s.name for s in PRIVATE_SURFACES if s.replaced}
    assert ours == {
        "data_designer.interface.data_designer:resolve_seed_default_model_settings",
        "data_designer.engine.analysis.utils.column_statistics_calculations:count_text_tokens",
        "data_designer.engine.analysis.column_statistics:calculate_token_stats",
    }
