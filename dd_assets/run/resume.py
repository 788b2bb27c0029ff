"""Whether a stage run resumes earlier batches: its own work directory's, or those another machine checkpointed."""

from __future__ import annotations

import shutil
from pathlib import Path

from data_designer.config.run_config import ResumeMode

from dd_assets.engine import artifact_layout
from dd_assets.run import resumable_work
from dd_assets.run.remote_checkpoint import RemoteCheckpoint
from dd_assets.run.stage_scope import StageScope
from dd_assets.storage.layout import CHECKPOINTS_DIR


def remote_checkpoint(scope: StageScope, work_dir: Path) -> RemoteCheckpoint | None:
    """The object-store checkpoint of this work (URL base_dir with checkpointing on), else ``None``."""
    io_manager = scope.io_manager
    if io_manager.is_local or io_manager.checkpoint_every_s <= 0:
        return None
    stage_dir = io_manager.stage_dir(scope.workflow.name, scope.stage.name, scope.partition)
    return RemoteCheckpoint(stage_dir / CHECKPOINTS_DIR / work_dir.name, work_dir, io_manager.checkpoint_every_s)


def resume_mode(scope: StageScope, work_dir: Path, checkpoint: RemoteCheckpoint | None) -> ResumeMode:
    """Restore the checkpoint when this machine has no work of its own, then decide: resume the finished batches
    (reopening those that dropped too many records), or clear the artifacts and start from the beginning."""
    artifacts_dir = artifact_layout.artifacts_dir(work_dir)
    if checkpoint is not None:
        restored = checkpoint.restore()
        if restored:
            scope.context.log.info(
                f"{scope.where}: restored {restored} finished batch(es) another run checkpointed to "
                f"{checkpoint.remote_dir}"
            )
    resume = ResumeMode.NEVER
    if (artifacts_dir / artifact_layout.METADATA).exists():
        reopened, resumable = resumable_work.reopen_short_batches(artifacts_dir, scope.stage.completion_threshold)
        if resumable:
            resume = ResumeMode.ALWAYS
            kept = resumable_work.finished_batches(work_dir)
            again = f"; {reopened} batch(es) that dropped records are generated again" if reopened else ""
            scope.context.log.info(f"{scope.where}: resuming {kept} finished batch(es) in {artifacts_dir}{again}")
        else:
            scope.context.log.warning(
                f"{scope.where}: the finished batches in {artifacts_dir} dropped records and were already "
                "post-processed, so they cannot be completed; generating from the start"
            )
    if resume == ResumeMode.NEVER and artifacts_dir.exists():
        shutil.rmtree(artifacts_dir)
    return resume
