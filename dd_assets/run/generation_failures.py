"""How a failed generation reads: Data Designer's error on one line, the early shutdown's cause, a full disk."""

from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

from dd_assets.engine.resource import DataDesignerResource
from dd_assets.run import resumable_work


def generation_failure_reason(exc: BaseException, failure_report: str | None) -> str:
    """Data Designer's error on one line; where it points to "the warnings above", the reason the provider gave."""
    reason = one_line(str(exc))
    if failure_report and "warnings above" in reason:
        shutdown = "Data Designer stopped early, " if "early shutdown" in reason else ""
        return f"{shutdown}no record was generated; {failure_report}"
    return reason


def one_line(message: str) -> str:
    """A Data Designer error message on one line: its ``|----------`` boxes and ``| Cause:`` margins removed."""
    text = re.sub(r"\|-{3,}", " ", message.replace("🛑", ""))
    text = re.sub(r"(^|\n)\s*\|", " ", text)
    return " ".join(text.split())


def early_shutdown_cause(resource: DataDesignerResource) -> str:
    """Why Data Designer shuts generation down early, and the settings that decide it."""
    run_config = resource.data_designer_run_config()
    return (
        f"at least {run_config.shutdown_error_rate:.0%} of the last {run_config.shutdown_error_window} or more "
        "generation tasks failed for good (RunConfig shutdown_error_rate / shutdown_error_window; each failure is "
        "a warning of this step). Fix the failing requests, or set DataDesignerResource(run_config="
        "{'disable_early_shutdown': True}) to keep generating past them"
    )


def with_disk_full_note(
    message: str, exc: BaseException, work_dir: Path | None, *, work_was_new: bool, made_requests: bool
) -> str:
    """On a full disk, free what this run wrote unless it holds paid work, and say so in ``message``."""
    disk_full = getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in str(exc)
    if not disk_full or work_dir is None or not work_dir.exists():
        return message
    size = resumable_work.human_size(resumable_work.tree_size(work_dir))
    if work_was_new and not made_requests:
        shutil.rmtree(work_dir, ignore_errors=True)
        return f"{message}. Freed {size} this run had written in {work_dir} (it made no model requests)"
    resumable_work.discard_partial_results(work_dir)
    kept = resumable_work.human_size(resumable_work.tree_size(work_dir))
    return (
        f"{message}. Kept {kept} of finished, paid-for batches in {work_dir} so the next run resumes them; "
        "delete that folder to free the space instead"
    )
