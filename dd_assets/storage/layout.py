"""The storage layout of published stages: the names of what a stage's folder holds.

``<base_dir>/<workflow>/<stage>/[<partition>/]`` holds ``stage.json`` (the commit), the data files, Data Designer's
``artifacts/`` and, while a run on an object store generates, ``.work/<work key>/`` checkpoints.
"""

from __future__ import annotations

from upath import UPath

CHECKPOINTS_DIR = ".work"


def remove_checkpoints(path: UPath) -> None:
    """Delete a checkpoint folder (or a stage's whole ``.work`` folder); missing is fine."""
    try:
        if path.exists():
            path.fs.rm(path.path, recursive=True)
    except FileNotFoundError:
        pass
