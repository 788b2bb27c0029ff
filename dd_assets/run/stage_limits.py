"""The stall deadline and token budget of one stage run (a :class:`StageGuard`), counting what earlier runs spent."""

from __future__ import annotations

from pathlib import Path

from data_designer.config.config_builder import DataDesignerConfigBuilder

from dd_assets.engine import artifact_layout
from dd_assets.engine.stage_guard import StageGuard
from dd_assets.engine.tokens_spent import read_tokens_spent, write_tokens_spent
from dd_assets.run import resumable_work
from dd_assets.run.stage_scope import StageScope
from dd_assets.spec.field_rules import check_token_budget
from dd_assets.spec.stage_models import used_model_configs


def stage_guard(scope: StageScope, work_dir: Path, builder: DataDesignerConfigBuilder) -> StageGuard:
    """The stall deadline and token budget of this run; fails at once when earlier runs spent the budget."""
    budget = scope.config.token_budget if scope.config.token_budget is not None else scope.stage.token_budget
    problem = check_token_budget(scope.config.token_budget)
    if problem:
        raise scope.fail(f"run config token_budget {problem}")
    stall_timeout_s = scope.stage.stall_timeout_s or scope.resource.stall_timeout_s
    for model in used_model_configs(builder):
        timeout = getattr(model.inference_parameters, "timeout", None)
        if timeout is not None and timeout >= stall_timeout_s:
            scope.context.log.warning(
                f"{scope.where}: model alias {model.alias!r} allows {timeout:g} s per request, not less than "
                f"stall_timeout_s={stall_timeout_s:g}: a slow but healthy answer can fail the stage as stalled; "
                "raise stall_timeout_s"
            )
    # the tokens of earlier runs of this very work (same inputs) count: retries cannot spend the budget again
    guard = StageGuard(
        stall_timeout_s=stall_timeout_s,
        token_budget=budget,
        tokens_before=read_tokens_spent(work_dir),
        spent_file_dir=work_dir,
    )
    if guard.budget_already_spent:
        if not resumable_work.all_batches_finished(artifact_layout.artifacts_dir(work_dir)):
            raise scope.fail(stopped_message(guard, work_dir))
        # every record was generated (a later step failed): finishing needs no generation request
        scope.context.log.info(
            f"{scope.where}: earlier runs of this work used {guard.tokens_before:,} tokens of its token_budget "
            f"{budget:,}, and every batch is finished; resuming without a budget, no generation request is needed"
        )
        guard.token_budget = None
    return guard


def save_tokens_spent(scope: StageScope, work_dir: Path, guard: StageGuard) -> None:
    """Record the tokens this work has used, for the budget of the next run of it."""
    try:
        write_tokens_spent(work_dir, guard.tokens_total)
    except OSError as exc:  # never hide the stage's own outcome behind this
        scope.context.log.warning(f"{scope.where}: could not record the tokens spent in {work_dir}: {exc}")


def stopped_message(guard: StageGuard, work_dir: Path) -> str:
    """Why the guard stopped the stage, and which finished batches the next run resumes."""
    kept = resumable_work.finished_batches(work_dir)
    again = (
        "rerun with a larger token_budget to resume them"
        if guard.budget_spent or guard.budget_already_spent
        else "the next materialization resumes them"
    )
    return (
        f"{guard.stop_reason or guard.budget_report()}. Kept {kept} finished batch(es) in {work_dir}; {again} "
        "without requesting their records again"
    )
