"""Keys never enter Dagster: not its config, run snapshots (compressed), event log, UI, nor error causes.

Provider keys and storage credentials are environment variable names or ``dg.EnvVar``; a literal is refused
with a message that does not repeat it. These tests look where Dagster keeps things, decompressing what
it compresses, and ask the real web UI's GraphQL for the resource's configured values.
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from pathlib import Path

import dagster as dg
import pytest

from dd_assets import DataDesignerResource, Stage, StageParquetIOManager, Workflow
from dd_assets_tests.cli_runs import PROJECT, llm_env, run
from dd_assets_tests.conftest import TEST_API_KEY_ENV, TEST_API_KEY_VALUE
from dd_assets_tests.helpers import materialize, sampler_builder
from dd_assets_tests.test_webserver import _graphql, running_webserver

SECRET = "sk-live-0123456789-SECRET-abcdef"

RESOURCES_QUERY = """
query ($location: String!, $repository: String!) {
  allTopLevelResourceDetailsOrError(repositorySelector: {repositoryLocationName: $location,
                                                         repositoryName: $repository}) {
    ... on ResourceDetailsList { results { name configuredValues { key value type } } }
  }
}
"""
REPOSITORIES_QUERY = "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"


def everything_dagster_stored(home: Path) -> str:
    """Every file under ``DAGSTER_HOME`` as text, and every value of its SQLite databases, zlib blobs
    (run and job snapshots) decompressed."""
    chunks = []
    for file in home.rglob("*"):
        if not file.is_file():
            continue
        chunks.append(file.read_bytes().decode("utf-8", errors="ignore"))
        if file.suffix != ".db":
            continue
        with sqlite3.connect(file) as db:
            tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                for row in db.execute(f'SELECT * FROM "{table}"'):
                    for value in row:
                        if isinstance(value, bytes):
                            try:
                                value = zlib.decompress(value)
                            except zlib.error:
                                pass
                            value = value.decode("utf-8", errors="ignore")
                        chunks.append(str(value))
    return "\n".join(chunks)


def test_the_storage_reader_sees_inside_compressed_run_snapshots(tmp_path, llm):
    # the check below is only worth something if it finds what Dagster compresses: the run's job snapshot
    env = llm_env(tmp_path, llm, DD_ASSETS_TEST_ROWS="2")
    assert run("slow/seed", env, tmp_path).returncode == 0
    home = Path(env["DAGSTER_HOME"])
    raw = "\n".join(f.read_bytes().decode("utf-8", errors="ignore") for f in home.rglob("*") if f.is_file())
    stored = everything_dagster_stored(home)
    assert "PipelineSnapshot" in stored and "PipelineSnapshot" not in raw
    # the resource's config (the key's *name*) sits in the compressed job snapshot, out of sight of a plain grep
    assert "DD_ASSETS_TEST_KEY" in stored and "DD_ASSETS_TEST_KEY" not in raw


@pytest.mark.parametrize("form", ["name", "EnvVar"])
def test_api_key_is_nowhere_dagster_stores_logs_or_shows(tmp_path, llm, form):
    env = llm_env(tmp_path, llm, DD_ASSETS_TEST_ROWS="4", DD_ASSETS_TEST_KEY=SECRET, DD_ASSETS_TEST_KEY_FORM=form)
    result = run("*", env, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Bearer {SECRET}" in llm.auth_headers  # the key was used ...
    home = Path(env["DAGSTER_HOME"])
    for where, text in {
        "stdout/stderr (compute logs)": result.stdout + result.stderr,
        "DAGSTER_HOME (event log, run storage and snapshots, decompressed)": everything_dagster_stored(home),
        "stage storage (stage.json, artifacts, data)": "\n".join(
            f.read_bytes().decode("utf-8", errors="ignore") for f in (tmp_path / "data").rglob("*") if f.is_file()
        ),
    }.items():
        assert SECRET not in text, where  # ... and stored nowhere

    with running_webserver(["-f", str(PROJECT)], env, tmp_path, ready_query=REPOSITORIES_QUERY) as port:
        repository = _graphql(port, REPOSITORIES_QUERY)["data"]["repositoriesOrError"]["nodes"][0]
        resources = _graphql(
            port,
            RESOURCES_QUERY,
            variables={"location": repository["location"]["name"], "repository": repository["name"]},
        )["data"]["allTopLevelResourceDetailsOrError"]["results"]
    shown = json.dumps(resources)
    assert SECRET not in shown
    providers = next(r for r in resources if r["name"] == "data_designer")
    assert "DD_ASSETS_TEST_KEY" in json.dumps(providers["configuredValues"])  # the UI shows the variable's name


def test_a_literal_api_key_is_refused_without_being_printed(tmp_path, llm):
    env = llm_env(tmp_path, llm, DD_ASSETS_TEST_ROWS="2", DD_ASSETS_TEST_KEY_LITERAL=SECRET)
    result = run("slow/seed", env, tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "model_providers[0] ('test_llm'): api_key must name an environment variable" in output
    assert SECRET not in output
    assert SECRET not in everything_dagster_stored(Path(env["DAGSTER_HOME"]))


@pytest.mark.parametrize(
    "provider",
    [
        {"name": "p", "endpiont": "http://127.0.0.1:1/v1", "api_key": "PROVIDER_KEY"},  # a typo'd field
        {"name": "p", "endpoint": "http://127.0.0.1:1/v1", "api_key": SECRET},  # a literal key
        {"name": "p", "endpoint": "http://127.0.0.1:1/v1", "extra_headers": {"Authorization": f"Bearer {SECRET}"}},
        {"name": "p", "endpoint": 5, "api_key": SECRET, "extra_body": {"x": SECRET}},  # a wrong type beside a key
    ],
)
def test_provider_errors_name_the_problem_and_never_the_values(provider):
    with pytest.raises(Exception) as info:
        DataDesignerResource(model_providers=[provider])
    message = str(info.value)
    assert "model_providers[0] ('p')" in message
    assert SECRET not in message and "PROVIDER_KEY" not in message


def test_api_key_as_env_var_is_kept_as_its_name():
    resource = DataDesignerResource(
        model_providers=[{"name": "p", "endpoint": "http://127.0.0.1:1/v1", "api_key": dg.EnvVar("SOME_KEY")}]
    )
    assert resource.model_providers[0]["api_key"] == "SOME_KEY"
    assert type(resource.model_providers[0]["api_key"]) is str  # not a dg.EnvVar Dagster would resolve into config


def test_an_unset_key_variable_fails_the_stage_before_any_request(io_manager, instance, llm):
    from dd_assets_tests.helpers import llm_builder

    resource = DataDesignerResource(
        model_providers=[{"name": "test_llm", "endpoint": llm.endpoint, "api_key": "DD_ASSETS_NOT_SET_ANYWHERE"}]
    )
    wf = Workflow(
        name="nokey",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=2),
            Stage(name="a", config=llm_builder("x", "Hi {{ n }}"), depends_on=["seed"]),
        ],
    )
    result = materialize(wf, io_manager, instance, resource=resource, raise_on_error=False)
    message = result.failure_data_for_node("nokey__a").error.message
    assert "the api_key of model provider 'test_llm' names environment variable 'DD_ASSETS_NOT_SET_ANYWHERE'" in message
    assert "which is not set in this process" in message
    assert llm.count() == 0


def test_storage_credentials_are_refused_as_values():
    with pytest.raises(Exception) as info:
        StageParquetIOManager(base_dir="s3://bucket/prefix", storage_options={"key": "AKIA123", "secret": SECRET})
    message = str(info.value)
    assert "storage_options 'key', 'secret' would put a credential into Dagster's run config" in message
    assert SECRET not in message and "AKIA123" not in message
    with pytest.raises(Exception) as info:
        StageParquetIOManager(base_dir="s3://b", storage_options={"client_kwargs": {"aws_secret_access_key": SECRET}})
    assert "'client_kwargs.aws_secret_access_key'" in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(Exception) as info:
        StageParquetIOManager(base_dir="s3://b", storage_secrets={"secret": SECRET})
    assert "storage_secrets['secret'] must name an environment variable" in str(info.value)
    assert SECRET not in str(info.value)


def test_storage_credentials_as_env_vars_are_resolved_only_where_used(monkeypatch, tmp_path):
    io_manager = StageParquetIOManager(
        base_dir=f"file://{tmp_path}/data",
        storage_options={"auto_mkdir": True, "secret": dg.EnvVar("DD_ASSETS_TEST_STORAGE_SECRET")},
    )
    assert io_manager.storage_options == {"auto_mkdir": True}
    assert io_manager.storage_secrets == {"secret": "DD_ASSETS_TEST_STORAGE_SECRET"}
    with pytest.raises(Exception, match="names environment variable 'DD_ASSETS_TEST_STORAGE_SECRET', which is not set"):
        io_manager.resolved_storage_options()
    monkeypatch.setenv("DD_ASSETS_TEST_STORAGE_SECRET", SECRET)
    assert io_manager.resolved_storage_options() == {"auto_mkdir": True, "secret": SECRET}
    assert SECRET in io_manager.secret_values()


def test_a_failure_carries_no_raw_cause_and_no_key(io_manager, instance, llm_resource):
    def leak(_artifacts: Path) -> Path:
        raise RuntimeError(f"the service rejected token {os.environ[TEST_API_KEY_ENV]}")

    wf = Workflow(name="leaky", stages=[Stage(name="a", config=sampler_builder(), num_records=2, on_success=leak)])
    result = materialize(wf, io_manager, instance, resource=llm_resource, raise_on_error=False)
    error = result.failure_data_for_node("leaky__a").error
    assert "on_success raised RuntimeError('the service rejected token ***')" in error.message
    assert error.cause is None and error.context is None  # the raw exception is not serialized with it
    logs = "\n".join(repr(e) for e in instance.all_logs(result.run_id))
    assert TEST_API_KEY_VALUE not in logs


def test_storage_options_refuse_nested_env_vars_and_accept_auth_method_tokens():
    with pytest.raises(Exception) as info:
        StageParquetIOManager(
            base_dir="s3://b", storage_options={"client_kwargs": {"aws_secret_access_key": dg.EnvVar("X")}}
        )
    assert "'client_kwargs.aws_secret_access_key': dg.EnvVar is only read at the top level" in str(info.value)
    assert StageParquetIOManager(base_dir="gs://b", storage_options={"token": "anon"}).storage_options == {
        "token": "anon"
    }


def test_an_aws_access_key_id_is_not_taken_for_a_variable_name():
    with pytest.raises(Exception) as info:
        DataDesignerResource(
            model_providers=[{"name": "p", "endpoint": "http://127.0.0.1:1/v1", "api_key": "AKIAABCDEFGHIJKLMNOP"}]
        )
    assert "must name an environment variable" in str(info.value) and "AKIAABCDEFGHIJKLMNOP" not in str(info.value)


# --- literal credentials outside api_key: one scanner (dd_assets.spec.secrets.literal_credentials) at every entry ---


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("extra_headers", {"Cookie": f"session={SECRET}"}, "extra_headers['Cookie']"),
        ("extra_headers", {"X-Auth": SECRET}, "extra_headers['X-Auth']"),
        ("extra_headers", {"X-Api-Key": SECRET}, "extra_headers['X-Api-Key']"),
        ("extra_headers", {"X-Forwarded": f"Bearer {SECRET}"}, "extra_headers['X-Forwarded']: an HTTP credential"),
        ("extra_body", {"api_key": SECRET}, "extra_body['api_key']"),
        ("extra_body", {"auth": {"token": SECRET}}, "extra_body['auth']['token']"),
        ("endpoint", f"http://127.0.0.1:1/v1?key={SECRET}", "endpoint: query parameter 'key'"),
        ("endpoint", f"http://user:{SECRET}@127.0.0.1:1/v1", "endpoint: user or password in the URL"),
    ],
)
def test_literal_provider_credentials_outside_api_key_are_refused_unrepeated(field, value, named):
    provider = {"name": "p", "endpoint": "http://127.0.0.1:1/v1", field: value}
    with pytest.raises(Exception) as info:
        DataDesignerResource(model_providers=[provider])
    message = str(info.value)
    assert f"model_providers[0] ('p'): {named}" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (
            {"endpoint_url": f"http://AKIAX:{SECRET}@127.0.0.1:9000"},
            "storage_options endpoint_url: user or password in the URL",
        ),
        (
            {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:9000/?X-Amz-Signature={SECRET}"}},
            "client_kwargs['endpoint_url']: query parameter 'X-Amz-Signature'",
        ),
        (
            {"config_kwargs": {"proxies": {"https": f"http://user:{SECRET}@proxy:3128"}}},
            "config_kwargs['proxies']['https']: user or password in the URL",
        ),
        ({"headers": [{"Authorization": f"Basic {SECRET}"}]}, "headers[0]['Authorization']"),
    ],
)
def test_credentials_in_storage_urls_and_proxies_are_refused_unrepeated(options, named):
    with pytest.raises(Exception) as info:
        StageParquetIOManager(base_dir="s3://bucket/prefix", storage_options=options)
    assert named in str(info.value) and SECRET not in str(info.value)
    with pytest.raises(Exception) as info:
        StageParquetIOManager(base_dir=f"s3://AKIAX:{SECRET}@bucket/prefix")
    assert "base_dir holds a credential" in str(info.value) and SECRET not in str(info.value)


def test_a_stage_config_with_a_literal_seed_token_is_refused_unrepeated(tmp_path):
    import data_designer.config as dd

    from dd_assets import WorkflowDefinitionError

    builder = dd.DataDesignerConfigBuilder()
    builder.with_seed_dataset(dd.HuggingFaceSeedSource(path="datasets/x/y/data.parquet", token=SECRET))
    builder.add_column(dd.ExpressionColumnConfig(name="e", expr="{{ text }}"))
    with pytest.raises(WorkflowDefinitionError) as info:
        Workflow(name="w", stages=[Stage(name="s", config=builder)])
    message = str(info.value)
    assert "workflow 'w', stage 's', field 'config': seed_config['source']['token']" in message
    assert SECRET not in message


def test_credentials_named_in_headers_and_body_are_read_where_requests_are_sent(io_manager, instance, llm, monkeypatch):
    # allowed: a credential-named header or body entry given as an environment variable name (or dg.EnvVar);
    # the name is what Dagster keeps, the value is read in the process that sends the request
    monkeypatch.setenv("DD_ASSETS_TEST_HEADER_KEY", SECRET)
    resource = DataDesignerResource(
        model_providers=[
            {
                "name": "test_llm",
                "endpoint": llm.endpoint,
                "extra_headers": {"Authorization": dg.EnvVar("DD_ASSETS_TEST_HEADER_KEY"), "X-Title": "dd-assets"},
                "extra_body": {"metadata_token": "DD_ASSETS_TEST_HEADER_KEY"},
            }
        ],
        run_config={"buffer_size": 997},
    )
    assert resource.model_providers[0]["extra_headers"]["Authorization"] == "DD_ASSETS_TEST_HEADER_KEY"
    assert SECRET in resource.secret_values()
    from dd_assets_tests.helpers import llm_builder

    wf = Workflow(
        name="hdr",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=2),
            Stage(name="a", config=llm_builder("x", "Hi {{ n }}"), depends_on=["seed"]),
        ],
    )
    result = materialize(wf, io_manager, instance, resource=resource)
    assert result.success
    assert SECRET in llm.auth_headers  # the header's value was sent ...
    logs = "\n".join(repr(e) for e in instance.all_logs(result.run_id))
    assert SECRET not in logs  # ... and is nowhere in the run's records


def test_dd_assets_preview_never_prints_a_key_the_provider_echoes(tmp_path, llm):
    import subprocess

    from dd_assets_tests.cli_runs import BIN

    env = llm_env(tmp_path, llm, DD_ASSETS_TEST_ROWS="2", DD_ASSETS_TEST_KEY=SECRET)
    assert run("slow/seed", env, tmp_path).returncode == 0
    # a provider that answers 400 and echoes the key it was sent (as OpenAI's "Incorrect API key provided: ...")
    llm.fault = lambda _prompt: (400, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})
    preview = subprocess.run(
        [str(BIN / "dd-assets"), "preview", "slow/write", "-n", "2", "-f", str(PROJECT)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = preview.stdout + preview.stderr
    assert preview.returncode == 1, output[-3000:]
    assert "dd-assets: workflow 'slow', stage 'write': preview failed:" in preview.stderr
    assert "Incorrect API key provided: ***" in output  # the provider's message is shown, the key is not
    assert SECRET not in output
    assert "Traceback" not in output
