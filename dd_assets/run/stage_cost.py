"""What a stage run spent: tokens (and, with prices set, dollars) in its metadata and its log, also when it fails."""

from __future__ import annotations

from typing import Any

import dagster as dg

from dd_assets.engine.costs import cost_metadata, run_total_cost, stage_cost, total_cost
from dd_assets.run.stage_scope import StageScope


def success_cost_metadata(scope: StageScope, record: dict[str, Any]) -> dict[str, Any]:
    """Tokens (and, with prices set, cost) of this run, logged with the run's total so far; noted in ``record``."""
    cost = _cost(scope, record.get("model_usage") or {})
    record["cost"] = cost
    _log_cost(scope, cost)
    return cost_metadata(cost, priced=bool(scope.resource.prices))


def spend_of_failure(scope: StageScope) -> tuple[dict[str, Any], dg.AssetObservation | None]:
    """What this failed run spent: metadata for its failure, and an observation of the stage recording it
    (so the asset's history and the run's total cost include it); empty when it made no model request."""
    model_usage = scope.stage_context.usage.as_dict()
    cost = _cost(scope, model_usage)
    if not model_usage and not cost["health_check_tokens"]:
        return {}, None
    metadata = cost_metadata(cost, priced=bool(scope.resource.prices))
    metadata["dd_assets/model_usage"] = dg.MetadataValue.json(model_usage)
    try:
        _log_cost(scope, cost, failed=True)
    except Exception as exc:  # noqa: BLE001 - never hide the stage's own failure behind this
        scope.context.log.warning(f"{scope.where}: could not sum this run's cost: {exc}")
    observation = dg.AssetObservation(
        asset_key=scope.asset_key,
        partition=scope.partition,
        metadata={**metadata, "dd_assets/status": dg.MetadataValue.text("failed")},
    )
    return metadata, observation


def _cost(scope: StageScope, model_usage: dict[str, Any]) -> dict[str, Any]:
    health_checks = scope.stage_context.usage.health_checks_as_dict()
    return stage_cost(model_usage, scope.resource.prices, scope.stage.builder, health_checks)


def _log_cost(scope: StageScope, cost: dict[str, Any], failed: bool = False) -> None:
    prices = scope.resource.prices
    spent = cost["input_tokens"] or cost["output_tokens"] or cost["health_check_tokens"]
    if not spent or not (prices or failed):
        return
    checks = f" (and {cost['health_check_tokens']} in health checks)" if cost["health_check_tokens"] else ""
    line = f"{cost['input_tokens']} input and {cost['output_tokens']} output tokens{checks}"
    if prices:
        total = run_total_cost(scope.context.instance, scope.context.run.run_id) + total_cost(cost)
        unpriced = f" (no price for {', '.join(cost['unpriced'])})" if cost["unpriced"] else ""
        line += f", ${total_cost(cost):.4f}{unpriced}; this run so far: ${total:.4f}"
    if failed:
        scope.context.log.warning(f"{scope.where}: failed after spending {line}")
    else:
        scope.context.log.info(f"{scope.where}: {line}")
