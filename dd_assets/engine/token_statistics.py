"""Data Designer's token statistics, counted only when the resource asks for them (they download a tokenizer)."""

from __future__ import annotations

import contextvars
from typing import Any

from dd_assets.engine.stage_context import CURRENT_STAGE

TOKEN_STATISTICS: contextvars.ContextVar[bool] = contextvars.ContextVar("dd_assets_token_statistics", default=False)
"""Whether the DataDesigner running now counts tokens (its resource's ``token_statistics``)."""


def _count_tokens_if_enabled(text: str) -> int:
    """Data Designer's profiler counts tokens through this: the setting of the DataDesigner running now decides."""
    if not TOKEN_STATISTICS.get():
        raise RuntimeError(
            "token statistics are off (offline default: the tokenizer is downloaded from the internet); "
            "set DataDesignerResource(token_statistics=True) to turn them on"
        )
    from data_designer.engine.utils.token_counting import count_text_tokens

    return count_text_tokens(text)


def install_token_statistics_switch() -> None:
    """Route Data Designer's tiktoken-based token statistics through a per-call switch (idempotent).

    Data Designer's profiler counts prompt and output tokens with tiktoken's ``cl100k_base``, which downloads its
    vocabulary from the internet on first use. The two module functions are replaced once, for the whole process
    (marked so in :data:`dd_assets.engine.data_designer_surface.PRIVATE_SURFACES`); whether it counts is decided
    per ``create()`` / ``preview()`` by the setting of the resource whose DataDesigner runs it (a context variable,
    so two resources, and stages running at once in threads, each keep their own). Off, the profiler records those
    statistics as not calculated instead of reaching the network.
    """
    from data_designer.engine.analysis import column_statistics
    from data_designer.engine.analysis.utils import column_statistics_calculations as calculations

    calculations.count_text_tokens = _count_tokens_if_enabled
    # Off, the LLM columns' token statistics are not attempted at all: attempted, Data Designer logs two warnings
    # per LLM column for the refusal above. A stage run says once that they are off (run.generation.Generation.run).
    column_statistics.calculate_token_stats = _token_stats_if_enabled


_TOKEN_STATISTIC_KEYS = tuple(
    f"{side}_tokens_{stat}" for side in ("input", "output") for stat in ("mean", "median", "stddev")
)


def _token_stats_if_enabled(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Data Designer's ``calculate_token_stats`` when token statistics are on; else each one "not calculated"."""
    from data_designer.config.analysis.column_statistics import MissingValue
    from data_designer.engine.analysis.utils import column_statistics_calculations as calculations

    if TOKEN_STATISTICS.get():
        return calculations.calculate_token_stats(*args, **kwargs)
    stage = CURRENT_STAGE.get()
    if stage is not None:
        stage.token_statistics_skipped = True
    return dict.fromkeys(_TOKEN_STATISTIC_KEYS, MissingValue.CALCULATION_FAILED)
