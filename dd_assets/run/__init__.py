"""One materialization: the stage run by job, the concurrent runner, seeds, work dirs, checkpoints, progress."""
