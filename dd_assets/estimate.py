"""An estimate before spending: records, LLM columns, model requests and a cost range per stage, without a model call.

``estimate(workflow)`` (and ``dd-assets estimate WORKFLOW[/STAGE]``) follows each stage's record count through
the workflow the way a run resolves it: ``num_records`` (split over partitions), else the seed's rows (a root
stage's seed file, an upstream's estimated output, joined by ``concat`` or ``zip``), else Data Designer's default.
Every LLM column makes one request per record (retries of failed requests come on top). The token range, and with
prices the cost range, runs from the prompts' own text (the template's length, about four characters per token, with
no substituted value and a one-token answer) to that plus ``max_tokens`` per answer; substituted values add to the
input side, so treat the upper end as a guide, not a bound, when prompts insert long columns. A stage's
``token_budget`` below that range is flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from dd_assets.costs import price_for
from dd_assets.seeds import resolve_num_records
from dd_assets.spec import Stage, Workflow

CHARS_PER_TOKEN = 4


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
    workflow: Workflow, stage: str | None = None, prices: dict[str, dict[str, float]] | None = None
) -> list[StageEstimate]:
    """Per stage of ``workflow`` (or only ``stage``): records, LLM columns, requests and (with ``prices``) cost."""
    rows: dict[str, int | None] = {}
    estimates = []
    for item in workflow.topological_order():
        records = _records(item, rows)
        rows[item.name] = records
        if stage is None or item.name == stage:
            estimates.append(_estimate_stage(workflow, item, records, prices or {}))
    if stage is not None and not estimates:
        raise KeyError(f"workflow {workflow.name!r} has no stage {stage!r}")
    return estimates


def _records(stage: Stage, rows: dict[str, int | None]) -> int | None:
    """The stage's records over all its partitions, resolved as a run resolves them (``None``: unknown)."""
    upstream_rows = None
    if stage.depends_on and not stage.num_records:
        upstream = [rows.get(dep) if isinstance(dep, str) else None for dep in stage.depends_on]
        if any(count is None for count in upstream) or callable(stage.combine):
            return None
        upstream_rows = sum(upstream) if stage.combine == "concat" else upstream[0]
    return resolve_num_records(stage, upstream_rows)


def _estimate_stage(
    workflow: Workflow, stage: Stage, records: int | None, prices: dict[str, dict[str, float]]
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
        prompt_tokens = math.ceil(
            len(str(getattr(column, "prompt", "")) + str(getattr(column, "system_prompt", "") or "")) / CHARS_PER_TOKEN
        )
        max_tokens = getattr(getattr(model, "inference_parameters", None), "max_tokens", None) if model else None
        tokens_low += records * (prompt_tokens + 1)
        if max_tokens is None:
            tokens_high = None
            result.notes.append(f"model alias {column.model_alias!r} sets no max_tokens: no upper bound")
        elif tokens_high is not None:
            tokens_high += records * (prompt_tokens + max_tokens)
        if not priced:
            continue
        price = price_for(prices, model.model if model else column.model_alias, [column.model_alias])
        if price is None:
            result.notes.append(f"no price for model alias {column.model_alias!r}")
            continue
        cost_low += records * (prompt_tokens * price["input"] + 1 * price["output"]) / 1e6
        if max_tokens is None or math.isinf(cost_high):
            cost_high = math.inf
        else:
            cost_high += records * (prompt_tokens * price["input"] + max_tokens * price["output"]) / 1e6
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
