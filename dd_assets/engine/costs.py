"""Cost per stage: model usage priced per million input and output tokens.

``DataDesignerResource(prices={"gpt-4o-mini": {"input": 0.15, "output": 0.6}})`` keys prices by model name or by
model alias. Each stage's materialization then carries ``dd_assets/cost_usd`` next to its token counts, as numeric
metadata the Dagster UI plots across materializations.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from data_designer.config.config_builder import DataDesignerConfigBuilder

PRICE_KEYS = ("input", "output")


def check_prices(prices: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{model or alias: {"input": usd per 1M tokens, "output": usd per 1M tokens}}``, validated."""
    for name, price in prices.items():
        if not isinstance(price, dict) or set(price) != set(PRICE_KEYS):
            raise ValueError(
                f"prices[{name!r}] must be {{'input': <usd per 1M tokens>, 'output': <usd per 1M tokens>}}"
            )
        for key in PRICE_KEYS:
            value = price[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"prices[{name!r}][{key!r}] must be a number of dollars >= 0, got {value!r}")
    return prices


def price_for(prices: dict[str, dict[str, float]], model: str, aliases: list[str]) -> dict[str, float] | None:
    """The price of a model: by its name first, then by an alias that uses it."""
    if model in prices:
        return prices[model]
    return next((prices[alias] for alias in aliases if alias in prices), None)


def stage_cost(
    model_usage: dict[str, dict[str, int]],
    prices: dict[str, dict[str, float]],
    builder: DataDesignerConfigBuilder,
    health_checks: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """Tokens and cost of one stage run: ``input_tokens``, ``output_tokens``, ``cost_usd`` (priced models only)
    and ``unpriced`` (models used without a price) of its generation requests, and ``health_check_tokens`` and
    ``health_check_cost_usd`` of the health checks it ran."""
    aliases_by_model: dict[str, list[str]] = {}
    for config in builder.model_configs:
        aliases_by_model.setdefault(config.model, []).append(config.alias)
    unpriced: list[str] = []

    def priced(usage_by_model: dict[str, dict[str, int]]) -> tuple[int, int, float]:
        input_tokens = output_tokens = 0
        cost = 0.0
        for model, usage in sorted(usage_by_model.items()):
            tokens_in, tokens_out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
            input_tokens += tokens_in
            output_tokens += tokens_out
            price = price_for(prices, model, aliases_by_model.get(model, []))
            if price is None:
                if (tokens_in or tokens_out) and model not in unpriced:
                    unpriced.append(model)
                continue
            cost += tokens_in / 1e6 * price["input"] + tokens_out / 1e6 * price["output"]
        return input_tokens, output_tokens, cost

    input_tokens, output_tokens, cost = priced(model_usage)
    check_in, check_out, check_cost = priced(health_checks or {})
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": cost,
        "unpriced": unpriced,
        "health_check_tokens": check_in + check_out,
        "health_check_cost_usd": check_cost,
    }


def cost_metadata(cost: dict[str, Any], priced: bool) -> dict[str, Any]:
    """Materialization metadata of a stage's tokens and (with prices set) its cost."""
    metadata = {
        "dd_assets/input_tokens": dg.MetadataValue.int(cost["input_tokens"]),
        "dd_assets/output_tokens": dg.MetadataValue.int(cost["output_tokens"]),
    }
    if cost.get("health_check_tokens"):
        metadata["dd_assets/health_check_tokens"] = dg.MetadataValue.int(cost["health_check_tokens"])
    if priced:
        metadata["dd_assets/cost_usd"] = dg.MetadataValue.float(round(cost["cost_usd"], 6))
        if cost.get("health_check_tokens"):
            metadata["dd_assets/health_check_cost_usd"] = dg.MetadataValue.float(
                round(cost["health_check_cost_usd"], 6)
            )
        if cost["unpriced"]:
            metadata["dd_assets/unpriced_models"] = dg.MetadataValue.text(", ".join(cost["unpriced"]))
    return metadata


def total_cost(cost: dict[str, Any]) -> float:
    """What a stage run cost: its generation requests and its health checks."""
    return cost["cost_usd"] + cost.get("health_check_cost_usd", 0.0)


RUN_TOTAL_KEYS = ("dd_assets/cost_usd", "dd_assets/health_check_cost_usd")


def run_total_cost(instance: dg.DagsterInstance, run_id: str) -> float:
    """What this run has spent so far: the cost of every stage it published (materializations) and of every stage
    that failed after making requests (the observation a failed stage records), health checks included."""
    total = 0.0
    for event_type in (dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_OBSERVATION):
        for record in instance.get_records_for_run(run_id, of_type=event_type).records:
            event = record.event_log_entry.dagster_event
            data = event.event_specific_data if event is not None else None
            entry = getattr(data, "materialization", None) or getattr(data, "asset_observation", None)
            for key in RUN_TOTAL_KEYS:
                value = entry.metadata.get(key) if entry is not None else None
                if value is not None:
                    total += float(value.value)
    return total
