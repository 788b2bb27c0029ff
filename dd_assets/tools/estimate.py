"""An estimate before spending: records, LLM columns, model requests and a cost range per stage, without a model call.

``estimate(workflow)`` (and ``dd-assets estimate WORKFLOW[/STAGE]``) follows each stage's record count through
the workflow the way a run resolves it (:func:`dd_assets.spec.seed_files.resolve_num_records`). Every LLM column
makes one request per record (retries of failed requests come on top). The token range, and with prices the cost range:

- low: the prompt templates' own text at four characters per token, nothing substituted, a one-token answer,
  one request per record and column;
- high, an upper bound: the messages as Data Designer builds them (its own response recipe adds the output schema
  and format instructions of structured, judge and code columns), at two characters per token, each substituted
  value at its own bound (an LLM column's ``max_tokens``, a category's longest value), the chat template's tokens
  per message and request, ``max_tokens`` per answer, every correction step and conversation restart the run
  config allows (``max_conversation_correction_steps``, ``max_conversation_restarts``) and one health check per
  model alias. Where no bound exists (a model without ``max_tokens``, a value from a seed file or expression, a
  ``{% for %}`` loop, tool calls), the high end is left open and a note says why.

A stage's ``token_budget`` below that range is flagged.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from data_designer.config.run_config import RunConfig

from dd_assets.engine.costs import price_for
from dd_assets.engine.prompt_rendering import response_recipe, template_variables
from dd_assets.spec.seed_files import combined_seed_rows, resolve_num_records
from dd_assets.spec.workflow import Stage, Workflow

CHARS_PER_TOKEN = 4  # typical: the low end
MIN_CHARS_PER_TOKEN = 2  # the high end: English text, code and JSON take at least this under common tokenizers
TEMPLATE_TOKENS_PER_MESSAGE = 8  # chat template markers around each message
TEMPLATE_TOKENS_PER_REQUEST = 64  # the assistant header and a default system prompt some templates insert
NUMBER_TOKENS = 16  # a sampled number, date, time span or uuid
HEALTH_CHECK = ("You are a helpful assistant.", "Hello!")  # Data Designer's health-check request
RESTARTING_COLUMN_TYPES = {"llm-structured", "llm-judge", "llm-code"}  # whose answers a parser can refuse


@dataclass
class StageEstimate:
    """What one stage will do when materialized (all of its partitions)."""

    workflow: str
    stage: str
    records: int | None  # None: not knowable before a run (external upstream, callable combine)
    llm_columns: list[str] = field(default_factory=list)
    requests: int | None = 0
    tokens_low: int | None = None
    tokens_high: int | None = None  # None with tokens_low set: some model sets no max_tokens
    cost_low_usd: float | None = None
    cost_high_usd: float | None = None
    notes: list[str] = field(default_factory=list)


def estimate(
    workflow: Workflow,
    stage: str | None = None,
    prices: dict[str, dict[str, float]] | None = None,
    run_config: RunConfig | None = None,
) -> list[StageEstimate]:
    """Per stage of ``workflow`` (or only ``stage``): records, LLM columns, requests and (with ``prices``) cost.
    ``run_config``: the resource's Data Designer run config (its correction and restart limits; defaults)."""
    run_config = run_config or RunConfig()
    rows: dict[str, int | None] = {}
    estimates = []
    for item in workflow.topological_order():
        records = _records(item, rows)
        rows[item.name] = records
        if stage is None or item.name == stage:
            estimates.append(_estimate_stage(workflow, item, records, prices or {}, run_config))
    if stage is not None and not estimates:
        raise KeyError(f"workflow {workflow.name!r} has no stage {stage!r}")
    return estimates


def _records(stage: Stage, rows: dict[str, int | None]) -> int | None:
    """The stage's records over all its partitions, resolved as a run resolves them (``None``: unknown)."""
    upstream_rows = None
    if stage.depends_on and not stage.num_records:
        counts = [rows.get(dep) if isinstance(dep, str) else None for dep in stage.depends_on]
        upstream_rows = combined_seed_rows(stage, counts)
        if upstream_rows is None:
            return None
    return resolve_num_records(stage, upstream_rows)


def _estimate_stage(
    workflow: Workflow, stage: Stage, records: int | None, prices: dict[str, dict[str, float]], run_config: RunConfig
) -> StageEstimate:
    result = StageEstimate(workflow=workflow.name, stage=stage.name, records=records)
    configs = {m.alias: m for m in stage.builder.model_configs}
    llm = [c for c in stage.builder.get_column_configs() if getattr(c, "model_alias", None)]
    result.llm_columns = [f"{c.name} ({c.model_alias})" for c in llm]
    if records is None:
        result.requests = None
        result.notes.append("records unknown before a run (external upstream or callable combine)")
        return result
    result.requests = records * len(llm)
    if not llm:
        return result
    tokens_low, tokens_high = 0, 0
    cost_low = cost_high = 0.0
    priced = bool(prices)
    for column in llm:
        model = configs.get(column.model_alias)
        name = model.model if model else column.model_alias
        price = price_for(prices, name, [column.model_alias]) if priced else None
        if priced and price is None:
            result.notes.append(f"no price for model alias {column.model_alias!r}")
        prompt_tokens = math.ceil(
            len(str(getattr(column, "prompt", "")) + str(getattr(column, "system_prompt", "") or "")) / CHARS_PER_TOKEN
        )
        tokens_low += records * (prompt_tokens + 1)
        if price is not None:
            cost_low += records * (prompt_tokens * price["input"] + 1 * price["output"]) / 1e6
        high, why = _column_high(workflow, stage, column, model, run_config)
        if high is None:
            tokens_high = None
            result.notes.append(f"column {column.name!r}: {why}: no upper bound")
            cost_high = math.inf
            continue
        if tokens_high is not None:
            tokens_high += records * (high[0] + high[1])
        if price is not None and not math.isinf(cost_high):
            cost_high += records * (high[0] * price["input"] + high[1] * price["output"]) / 1e6
    for alias in sorted({c.model_alias for c in llm}):  # one health check per alias, if this process makes it
        check = _health_check_tokens(configs.get(alias))
        if check is not None and tokens_high is not None:
            tokens_high += sum(check)
        model = configs.get(alias)
        price = price_for(prices, model.model if model else alias, [alias]) if priced else None
        if check is not None and price is not None and not math.isinf(cost_high):
            cost_high += (check[0] * price["input"] + check[1] * price["output"]) / 1e6
    result.tokens_low, result.tokens_high = tokens_low, tokens_high
    if priced:
        result.cost_low_usd, result.cost_high_usd = cost_low, (None if math.isinf(cost_high) else cost_high)
    budget = stage.token_budget
    if budget is not None:
        if budget < tokens_low:
            result.notes.append(f"token_budget {budget:,} is below the lowest estimate: the stage will stop short")
        elif tokens_high is None or budget < tokens_high:
            result.notes.append(f"token_budget {budget:,} may stop the stage before its last record")
    return result


def _max_tokens(model) -> int | None:
    return getattr(getattr(model, "inference_parameters", None), "max_tokens", None) if model else None


def _request_tokens(chars: int, values: int, messages: int) -> int:
    """The most input tokens of a request: its fixed text, its substituted values' tokens, the chat template."""
    return (
        math.ceil(chars / MIN_CHARS_PER_TOKEN)
        + values
        + TEMPLATE_TOKENS_PER_MESSAGE * messages
        + TEMPLATE_TOKENS_PER_REQUEST
    )


def _health_check_tokens(model) -> tuple[int, int] | None:
    max_tokens = _max_tokens(model)
    if model is None or max_tokens is None or getattr(model, "skip_health_check", False):
        return None
    return _request_tokens(sum(len(t) for t in HEALTH_CHECK), 0, 2), max_tokens


def _column_high(workflow: Workflow, stage: Stage, column, model, run_config: RunConfig):
    """``((input, output) tokens per record, None)`` at most for one LLM column, or ``(None, why not)``."""
    max_tokens = _max_tokens(model)
    if max_tokens is None:
        return None, f"model alias {column.model_alias!r} sets no max_tokens"
    if getattr(column, "tool_alias", None):
        return None, "tool calls add turns of unknown size"
    recipe = response_recipe(column, model)  # Data Designer's own: the schema and instructions it adds
    user, user_values = _template_bound(workflow, stage, str(column.prompt or ""))
    system, system_values = _template_bound(workflow, stage, str(getattr(column, "system_prompt", None) or ""))
    for text, values in ((user, user_values), (system, system_values)):
        if values is None:
            return None, text
    user_chars = len(recipe.apply_recipe_to_user_prompt(user))
    system_text = recipe.apply_recipe_to_system_prompt(system)
    messages = 2 if (system_text or system_values) else 1
    chars, values = user_chars + len(system_text or ""), user_values + system_values
    corrections = run_config.max_conversation_correction_steps
    restarts = run_config.max_conversation_restarts if str(column.column_type) in RESTARTING_COLUMN_TYPES else 0
    if str(column.column_type) not in RESTARTING_COLUMN_TYPES:
        corrections = 0  # a text answer is never refused by its parser
    # one conversation: the first request, then each correction resends it all with the answer and the error
    # (an error message repeats at most the answer and the schema, plus a line of its own)
    error_tokens = max_tokens + math.ceil((user_chars - len(user) + 200) / MIN_CHARS_PER_TOKEN)
    inputs = sum(
        _request_tokens(chars, values, messages + 2 * step) + step * (max_tokens + error_tokens)
        for step in range(corrections + 1)
    )
    conversations = 1 + restarts
    return (conversations * inputs, conversations * (corrections + 1) * max_tokens), None


def _template_bound(workflow: Workflow, stage: Stage, template: str) -> tuple[str, int | None]:
    """A template's fixed text and the most tokens its substituted values take; ``(why, None)`` when unbounded."""
    if "{%" in template and "for " in template.split("{%", 1)[1]:
        return "a {% for %} loop repeats text a number of times known only at run time", None
    fixed = re.sub(r"\{\{.*?\}\}", "", template, flags=re.S)
    values = 0
    for expression in re.findall(r"\{\{(.*?)\}\}", template, flags=re.S):
        for name in sorted(template_variables("{{" + expression + "}}")):
            bound = _value_tokens(workflow, stage, name, set())
            if bound is None:
                return f"the prompt inserts {name!r}, whose size is not known before a run", None
            values += bound
    return fixed, values


def _value_tokens(workflow: Workflow, stage: Stage, name: str, seen: set[str]) -> int | None:
    """The most tokens a column's value takes in a prompt: found in ``stage`` or, through a seed, its upstreams."""
    if stage.name in seen:
        return None
    seen.add(stage.name)
    column = next((c for c in stage.builder.get_column_configs() if c.name == name), None)
    if column is not None:
        if getattr(column, "model_alias", None):
            model = next((m for m in stage.builder.model_configs if m.alias == column.model_alias), None)
            max_tokens = _max_tokens(model)
            return None if max_tokens is None else max_tokens + 8  # re-tokenized at the edges
        if str(column.column_type) == "sampler":
            params = column.params
            if str(column.sampler_type) == "category":
                return max((math.ceil(len(str(v)) / MIN_CHARS_PER_TOKEN) + 1 for v in params.values), default=1)
            if str(column.sampler_type) == "subcategory":
                values = [v for group in params.values.values() for v in group]
                return max((math.ceil(len(str(v)) / MIN_CHARS_PER_TOKEN) + 1 for v in values), default=1)
            if str(column.sampler_type) in {
                "bernoulli",
                "bernoulli_mixture",
                "binomial",
                "gaussian",
                "poisson",
                "scipy",
                "uniform",
                "datetime",
                "timedelta",
                "uuid",
            }:
                return NUMBER_TOKENS
        return None  # expressions, seed file columns, people: no bound known before a run
    for dep in stage.depends_on:
        if isinstance(dep, str):
            bound = _value_tokens(workflow, workflow.stage(dep), name, seen)
            if bound is not None:
                return bound
    return None


def as_rows(estimates: list[StageEstimate]) -> list[dict[str, Any]]:
    """Printable rows of estimates (for ``dd-assets estimate``)."""
    rows = []
    for item in estimates:
        cost = ""
        if item.cost_low_usd is not None:
            high = f"${item.cost_high_usd:.4f}" if item.cost_high_usd is not None else "?"
            cost = f"${item.cost_low_usd:.4f} - {high}"
        rows.append(
            {
                "stage": f"{item.workflow}/{item.stage}",
                "records": "?" if item.records is None else str(item.records),
                "llm_columns": ", ".join(item.llm_columns) or "-",
                "requests": "?" if item.requests is None else str(item.requests),
                "tokens": _token_range(item),
                "cost": cost,
                "notes": "; ".join(item.notes),
            }
        )
    return rows


def _token_range(item: StageEstimate) -> str:
    if item.tokens_low is None:
        return ""
    high = f"{item.tokens_high:,}" if item.tokens_high is not None else "?"
    return f"{item.tokens_low:,} - {high}"
