"""An estimate before spending: records, LLM columns, requests and a cost range, without any model call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import data_designer.config as dd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dd_assets import Stage, Workflow
from dd_assets.tools.estimate import (
    NUMBER_TOKENS,
    TEMPLATE_TOKENS_PER_MESSAGE,
    TEMPLATE_TOKENS_PER_REQUEST,
    estimate,
)
from dd_assets_tests.conftest import cli_environment
from dd_assets_tests.helpers import (
    expression_builder,
    llm_builder,
    materialize,
    metadata_of,
    model_config,
    sampler_builder,
)

BIN = Path(sys.executable).parent


def _workflow() -> Workflow:
    two = llm_builder("summary", "Summarize {{ text }}")  # max_tokens=32 in the helper's model config
    two.add_column(llm_builder("title", "Title for {{ text }}").get_column_configs()[0])
    return Workflow(
        name="est",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=12),
            Stage(name="write", config=llm_builder("text", "Write two lines about {{ n }}"), depends_on=["seed"]),
            Stage(name="more", config=two, depends_on=["write"]),
            Stage(
                name="plain", config=expression_builder("x", "{{ n }}"), depends_on=["seed", "write"], combine="concat"
            ),
        ],
    )


def test_estimate_counts_records_and_requests_and_prices_a_range(llm):
    prices = {"test-model": {"input": 2.0, "output": 10.0}}
    by_stage = {e.stage: e for e in estimate(_workflow(), prices=prices)}
    assert [by_stage[s].records for s in ["seed", "write", "more", "plain"]] == [12, 12, 12, 24]
    assert [by_stage[s].requests for s in ["seed", "write", "more", "plain"]] == [0, 12, 24, 0]
    assert by_stage["more"].llm_columns == ["summary (test-model)", "title (test-model)"]
    write = by_stage["write"]
    prompt_tokens = -(-len("Write two lines about {{ n }}") // 4)
    # the high end: the fixed text at 2 characters per token, the sampled number, the chat template, max_tokens;
    # and once per alias Data Designer's health check
    high_in = -(-len("Write two lines about ") // 2) + NUMBER_TOKENS + TEMPLATE_TOKENS_PER_MESSAGE
    high_in += TEMPLATE_TOKENS_PER_REQUEST
    check_in = -(-len("You are a helpful assistant.Hello!") // 2) + 2 * TEMPLATE_TOKENS_PER_MESSAGE
    check_in += TEMPLATE_TOKENS_PER_REQUEST
    assert write.cost_low_usd == pytest.approx(12 * (prompt_tokens * 2.0 + 1 * 10.0) / 1e6)
    assert write.cost_high_usd == pytest.approx((12 * (high_in * 2.0 + 32 * 10.0) + check_in * 2.0 + 320.0) / 1e6)
    assert (write.tokens_low, write.tokens_high) == (12 * (prompt_tokens + 1), 12 * (high_in + 32) + check_in + 32)
    assert llm.count() == 0  # no model was called


@pytest.mark.parametrize(
    ("budget", "note"),
    [(10, "is below the lowest estimate: the stage will stop short"), (200, "may stop the stage"), (10_000, None)],
)
def test_the_estimate_flags_a_token_budget_the_stage_will_not_fit_in(budget, note):
    workflow = Workflow(
        name="est",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=12),
            Stage(
                name="write",
                config=llm_builder("text", "Write two lines about {{ n }}"),
                depends_on=["seed"],
                token_budget=budget,
            ),
        ],
    )
    (write,) = estimate(workflow, "write")  # 12 * 9 = 108 to 12 * 131 + 129 = 1,701 tokens
    flagged = [n for n in write.notes if "token_budget" in n]
    assert (flagged == []) if note is None else (note in flagged[0] and f"{budget:,}" in flagged[0])


def test_the_estimate_brackets_what_a_run_then_costs(io_manager, instance, llm, llm_resource):
    from dd_assets import DataDesignerResource

    prices = {"test-model": {"input": 2.0, "output": 10.0}}
    workflow = Workflow(name="est", stages=list(_workflow().stages[:2]))
    (planned,) = estimate(workflow, "write", prices)
    resource = DataDesignerResource(model_providers=llm_resource.model_providers, prices=prices)
    result = materialize(workflow, io_manager, instance, resource=resource)
    spent = metadata_of(result, ["est", "write"])["dd_assets/cost_usd"]
    assert llm.count("generation") == planned.requests == 12
    assert planned.cost_low_usd <= spent <= planned.cost_high_usd


def test_dd_assets_estimate_prints_each_stage(tmp_path, llm):
    (tmp_path / "project.py").write_text(
        "import data_designer.config as dd\n"
        "from dd_assets import DataDesignerResource, Stage, Workflow, build_workflow_definitions\n"
        "from dd_assets_tests.helpers import llm_builder, sampler_builder\n"
        "wf = Workflow(name='est', stages=[Stage(name='seed', config=sampler_builder(), num_records=7),\n"
        "    Stage(name='write', config=llm_builder('text', 'About {{ n }}'), depends_on=['seed'])])\n"
        "defs = build_workflow_definitions(wf, data_designer=DataDesignerResource(\n"
        "    prices={'test-model': {'input': 1.0, 'output': 4.0}}))\n"
    )
    env = cli_environment(tmp_path, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [str(BIN / "dd-assets"), "estimate", "est", "-f", str(tmp_path / "project.py")]
    proc = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    write = next(line for line in proc.stdout.splitlines() if line.startswith("est/write"))
    assert " 7 " in write and "text (test-model)" in write and "$" in write
    missing = subprocess.run(
        [*command[:2], "est/nope", *command[3:]], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "has no stage 'nope'" in missing.stderr
    assert llm.count() == 0


def test_a_bare_dd_assets_estimate_estimates_every_stage_of_every_workflow(tmp_path, llm):
    (tmp_path / "project.py").write_text(
        "from dd_assets import Stage, Workflow, build_workflow_definitions\n"
        "from dd_assets_tests.helpers import llm_builder, sampler_builder\n"
        "one = Workflow(name='one', stages=[Stage(name='seed', config=sampler_builder(), num_records=7),\n"
        "    Stage(name='write', config=llm_builder('text', 'About {{ n }}'), depends_on=['seed'])])\n"
        "two = Workflow(name='two', stages=[Stage(name='rows', config=sampler_builder(), num_records=3)])\n"
        "defs = build_workflow_definitions(one, two)\n"
    )
    env = cli_environment(tmp_path, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [str(BIN / "dd-assets"), "estimate", "-f", str(tmp_path / "project.py")]
    proc = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    stages = [line.split()[0] for line in proc.stdout.splitlines()[1:] if line.strip() and "/" in line.split()[0]]
    assert stages == ["one/seed", "one/write", "two/rows"]
    assert llm.count() == 0


@pytest.mark.parametrize(
    "selection",
    [dd.IndexRange(start=2, end=6), dd.PartitionBlock(index=1, num_partitions=3)],
    ids=["index_range", "partition_block"],
)
def test_the_estimate_counts_the_rows_a_root_seeds_own_selection_picks(io_manager, instance, tmp_path, selection):
    seed = tmp_path / "seed.parquet"
    pq.write_table(pa.table({"n": list(range(10))}), seed)
    builder = expression_builder("m", "{{ n }}").with_seed_dataset(
        dd.LocalFileSeedSource(path=str(seed)), selection_strategy=selection
    )
    workflow = Workflow(name="est", stages=[Stage(name="root", config=builder)])
    (planned,) = estimate(workflow, "root")
    result = materialize(workflow, io_manager, instance)
    generated = metadata_of(result, ["est", "root"])["dagster/row_count"]
    assert planned.records == generated == (5 if isinstance(selection, dd.IndexRange) else 3)


def _bounded_workflow() -> Workflow:
    structured = dd.DataDesignerConfigBuilder(model_configs=[model_config()])
    structured.add_column(
        dd.LLMStructuredColumnConfig(
            name="facts",
            model_alias="test-model",
            prompt="List facts about {{ text }} in {{ color }}",
            system_prompt="You answer in JSON.",
            output_format={"type": "object", "properties": {"facts": {"type": "array", "items": {"type": "string"}}}},
        )
    )
    judge = dd.DataDesignerConfigBuilder(model_configs=[model_config()])
    judge.add_column(
        dd.LLMJudgeColumnConfig(
            name="grade",
            model_alias="test-model",
            prompt="Grade this text: {{ text }}",
            scores=[dd.Score(name="quality", description="how well it reads", options={1: "badly", 5: "well"})],
        )
    )
    return Workflow(
        name="bound",
        stages=[
            Stage(name="seed", config=sampler_builder(), num_records=3),
            Stage(
                name="text",
                config=llm_builder("text", "Write two lines about {{ n }} and {{ color }}"),
                depends_on=["seed"],
            ),
            Stage(name="structured", config=structured, depends_on=["text"]),
            Stage(name="judge", config=judge, depends_on=["text"]),
        ],
    )


def test_the_estimates_upper_bound_holds_what_the_server_counted(io_manager, instance, llm, llm_resource):
    """Answers as long as max_tokens allows, none a parser accepts: every restart Data Designer makes is paid for."""
    llm.usage, llm.answer_tokens = "text", 200  # every answer is cut at max_tokens; it is never JSON
    workflow = _bounded_workflow()
    planned = {e.stage: e for e in estimate(workflow)}
    spent = {}
    for stage in ["text", "structured", "judge"]:
        with llm.lock:
            llm.request_log.clear()
        selection = [dg.AssetKey(["bound", s]) for s in (["seed", "text"] if stage == "text" else [stage])]
        materialize(workflow, io_manager, instance, resource=llm_resource, selection=selection, raise_on_error=False)
        assert all(e["finish_reason"] == "length" for e in llm.request_log if e["kind"] == "generation")
        spent[stage] = llm.tokens_used(None)  # health checks included
        requests = sum(e["kind"] == "generation" for e in llm.request_log)
        assert requests > 0, stage
        assert planned[stage].tokens_low <= spent[stage] <= planned[stage].tokens_high, (stage, spent, planned[stage])
    # the bound counts Data Designer's restarts of a refused answer (5 by default) and its schema instructions
    assert spent["structured"] > 3 * spent["text"]
