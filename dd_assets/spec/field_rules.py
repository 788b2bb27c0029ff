"""Limits of Stage and Workflow fields that run config values are held to as well: record counts and token budgets.

The field definitions (:func:`~dd_assets.spec.field_specs.spec_field` in :mod:`dd_assets.spec.workflow`) use these
ranges; the stage checks and the run's config checks give the same messages.
"""

from __future__ import annotations

from dd_assets.spec.field_specs import Bounds

DEFAULT_MAX_NUM_RECORDS = 10_000_000
EXECUTION_MODES = ("per_stage", "concurrent")
MAX_STATIC_PARTITIONS = 10_000
NUM_RECORDS_BOUNDS = Bounds(minimum=1)  # and at most the workflow's max_num_records
TOKEN_BUDGET_BOUNDS = Bounds(minimum=1)
TOKEN_BUDGET_WHAT = f"a whole number of tokens >= {TOKEN_BUDGET_BOUNDS.minimum}"  # "must be <what>" of a token budget


def check_num_records(value: object, *, maximum: int) -> str | None:
    """Why ``value`` is not a valid record count (a plain int in 1..maximum), or ``None`` when it is."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in NUM_RECORDS_BOUNDS:
        return f"must be a positive integer, got {value!r}"
    if value > maximum:
        return f"{value:,} is above the workflow's max_num_records ({maximum:,}); raise max_num_records if you mean it"
    return None


def check_token_budget(budget: object) -> str | None:
    """What is wrong with a ``token_budget`` (``None`` when it is fine or unset)."""
    if budget is None:
        return None
    if not isinstance(budget, int) or budget not in TOKEN_BUDGET_BOUNDS:
        return f"must be {TOKEN_BUDGET_WHAT}, got {budget!r}"
    return None
