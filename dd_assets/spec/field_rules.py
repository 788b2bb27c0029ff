"""The allowed values of :class:`~dd_assets.spec.workflow.Stage`'s and ``Workflow``'s fields.

The ranges are the one place the Python checks and the YAML schema read; the record count and token budget checks
also hold run config values to them.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_NUM_RECORDS = 10_000_000
EXECUTION_MODES = ("per_stage", "concurrent")
MAX_STATIC_PARTITIONS = 10_000


@dataclass(frozen=True)
class Bounds:
    """The allowed range of a numeric field: checked here for Python, published as JSON Schema for YAML."""

    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return (
            (self.minimum is None or value >= self.minimum)
            and (self.exclusive_minimum is None or value > self.exclusive_minimum)
            and (self.maximum is None or value <= self.maximum)
        )

    def interval(self) -> str:
        """The range as an interval, such as ``(0, 1]``."""
        low = f"[{self.minimum}" if self.minimum is not None else f"({self.exclusive_minimum}"
        return f"{low}, {self.maximum}]" if self.maximum is not None else f"{low}, inf)"

    def json_schema(self) -> dict[str, float]:
        """The JSON Schema keywords of the range."""
        keywords = {"minimum": self.minimum, "exclusiveMinimum": self.exclusive_minimum, "maximum": self.maximum}
        return {key: value for key, value in keywords.items() if value is not None}


STAGE_BOUNDS: dict[str, Bounds] = {
    "num_records": Bounds(minimum=1),  # and at most the workflow's max_num_records
    "partitions": Bounds(minimum=2, maximum=MAX_STATIC_PARTITIONS),  # as a count of static partitions
    "completion_threshold": Bounds(exclusive_minimum=0, maximum=1),
    "token_budget": Bounds(minimum=1),
    "stall_timeout_s": Bounds(exclusive_minimum=0),
}
"""The ranges of :class:`Stage`'s numeric fields: the one place both the Python checks and the YAML schema read."""

WORKFLOW_BOUNDS: dict[str, Bounds] = {"max_num_records": Bounds(minimum=1), "max_concurrent_stages": Bounds(minimum=1)}
"""The ranges of :class:`Workflow`'s numeric fields."""


def check_num_records(value: object, *, maximum: int) -> str | None:
    """Why ``value`` is not a valid record count (a plain int in 1..maximum), or ``None`` when it is."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in STAGE_BOUNDS["num_records"]:
        return f"must be a positive integer, got {value!r}"
    if value > maximum:
        return f"{value:,} is above the workflow's max_num_records ({maximum:,}); raise max_num_records if you mean it"
    return None


def check_token_budget(budget: object) -> str | None:
    """What is wrong with a ``token_budget`` (``None`` when it is fine or unset)."""
    if budget is None:
        return None
    bounds = STAGE_BOUNDS["token_budget"]
    if not isinstance(budget, int) or budget not in bounds:
        return f"must be a whole number of tokens >= {bounds.minimum}, got {budget!r}"
    return None
