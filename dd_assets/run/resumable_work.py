"""Work directories: where a stage generates, kept after a failure so the next run resumes its batches.

A work directory is named by the stage's work key (:func:`dd_assets.spec.versioning.generation_work_key`) and
holds ``inputs.json`` (the generation inputs the key hashes), the seed (``seed/``), Data Designer's artifacts and,
for a stage whose upstreams have no rows, ``empty.parquet``. Upstreams are read into ``inputs-<run id>`` beside the
work directories before the work key is known. A rerun
with the same inputs resumes there; a rerun with other inputs starts in a new directory and says why
(:func:`describe_superseded_work`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from dd_assets.engine import artifact_layout

INPUTS_FILE = "inputs.json"
SEED_DIR = "seed"
EMPTY_OUTPUT_FILE = "empty.parquet"


def inputs_dir_name(run_id: str) -> str:
    """The folder, beside the work directories, where one run reads its upstreams before its work key is known."""
    return f"inputs-{run_id}"


_LABELS = {
    "config_fingerprint": "the stage config",
    "own_seed": "the seed settings of the config",
    "seed_fingerprint": "the seed data (upstream output or seed file content)",
    "num_records": "num_records",
    "sampling_strategy": "sampling_strategy",
    "selection_strategy": "selection_strategy",
    "run_settings": "the Data Designer run settings",
    "data_designer_version": "the Data Designer version",
    "scheme": "the dd_assets work key scheme",
    "callables": "the code of a custom column generator or validation function",
    "unrepeatable": "a callable that cannot be identified by its code (such work never resumes)",
}


def write_inputs(work_dir: Path, inputs: dict[str, Any]) -> None:
    """Record the generation inputs of a work directory (read back by :func:`describe_superseded_work`)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / INPUTS_FILE).write_text(json.dumps(inputs, indent=2, sort_keys=True, default=str))


def finished_batches(work_dir: Path) -> int:
    """How many finished batches a work directory holds."""
    return len(list((artifact_layout.batches_dir(work_dir)).glob(artifact_layout.BATCH_GLOB)))


def describe_superseded_work(work_root: Path, current_key: str, inputs: dict[str, Any]) -> list[str]:
    """One line per other work directory with finished batches that these inputs cannot reuse, saying why."""
    lines = []
    if not work_root.is_dir():
        return lines
    for other in sorted(work_root.iterdir()):
        if other.name == current_key or not other.is_dir() or not finished_batches(other):
            continue
        try:
            previous = json.loads((other / INPUTS_FILE).read_text())
        except (OSError, ValueError):
            previous = {}
        changed = [
            _LABELS.get(key, key) for key in sorted(set(inputs) | set(previous)) if inputs.get(key) != previous.get(key)
        ]
        if "num_records" in changed:
            changed[changed.index("num_records")] = (
                f"num_records ({previous.get('num_records')} -> {inputs['num_records']})"
            )
        lines.append(
            f"{finished_batches(other)} finished batch(es) in {other} were generated from other inputs "
            f"({', '.join(changed) or 'unknown'} changed) and are not reused"
        )
    return lines


def reopen_short_batches(artifacts_dir: Path, completion_threshold: float) -> tuple[int, bool]:
    """Make Data Designer's resume regenerate batches that finished with records dropped, when too many were.

    Data Designer's resume skips every finished batch, including one that dropped records after its retries,
    so a stage below its completion threshold would fail the same way on every rerun. When the finished batches
    hold less than ``completion_threshold`` of the target, removing the short batch files makes the resume
    generate them again; full batches are kept and never requested twice. At or above the threshold nothing is
    reopened: what was paid for is enough.

    Returns ``(batches reopened, resumable)``; ``resumable`` is ``False`` when after-generation processors
    have already rewritten the dataset, so the batches cannot be reopened and the work must start afresh.
    """
    plan = _batch_plan(artifacts_dir)
    if plan is None:
        return 0, True  # Data Designer decides (and explains) whether it can resume
    short = _short_batches(artifacts_dir, plan, written_since=None)
    dropped = sum(missing for _, missing in short)
    # batches not finished yet are generated on resume anyway: only the dropped records can keep it short
    if not short or plan.target - dropped >= completion_threshold * plan.target:
        return 0, True
    if plan.metadata.get("post_generation_processed") or plan.metadata.get("post_generation_state"):
        return 0, False
    for path, _ in short:
        path.unlink()
    return len(short), True


@dataclass(frozen=True)
class _BatchPlan:
    """The batches Data Designer's ``metadata.json`` plans for a work directory."""

    buffer_size: int
    target: int  # records
    metadata: dict[str, Any]

    @property
    def batches(self) -> int:
        return -(-self.target // self.buffer_size)

    def planned_rows(self, index: int) -> int:
        return min(self.buffer_size, self.target - index * self.buffer_size)


def _batch_plan(artifacts_dir: Path) -> _BatchPlan | None:
    try:
        metadata = json.loads((artifacts_dir / artifact_layout.METADATA).read_text())
        return _BatchPlan(int(metadata["buffer_size"]), int(metadata["target_num_records"]), metadata)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _batch_files(artifacts_dir: Path) -> dict[int, Path]:
    """Finished batch files by batch index (``batch_00003.parquet`` is batch 3)."""
    files = {}
    for path in (artifacts_dir / artifact_layout.BATCHES).glob(artifact_layout.BATCH_GLOB):
        try:
            files[int(path.stem.split("_", 1)[1])] = path
        except (ValueError, IndexError):
            continue
    return files


def all_batches_finished(artifacts_dir: Path) -> bool:
    """Whether every batch of the target is on disk (the resume then makes no generation request)."""
    plan = _batch_plan(artifacts_dir)
    return plan is not None and plan.batches > 0 and set(range(plan.batches)) <= _batch_files(artifacts_dir).keys()


def short_batches(artifacts_dir: Path, written_since: float | None = None) -> list[tuple[Path, int]]:
    """Finished batch files holding fewer records than planned, with how many each lacks (optionally only those
    written at or after ``written_since``, a ``time.time()``)."""
    plan = _batch_plan(artifacts_dir)
    return [] if plan is None else _short_batches(artifacts_dir, plan, written_since)


def _short_batches(artifacts_dir: Path, plan: _BatchPlan, written_since: float | None) -> list[tuple[Path, int]]:
    short = []
    for index, path in sorted(_batch_files(artifacts_dir).items()):
        try:
            rows = pq.read_metadata(path).num_rows
            written = path.stat().st_mtime
        except (ValueError, OSError):  # an unreadable footer (pyarrow raises ValueError subclasses)
            continue
        planned = plan.planned_rows(index)
        if rows < planned and (written_since is None or written >= written_since):
            short.append((path, planned - rows))
    return short


def tree_size(path: Path) -> int:
    """Bytes under ``path`` (0 when it does not exist)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def human_size(size: int) -> str:
    """``1.5 MB`` style."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def discard_partial_results(work_dir: Path) -> None:
    """Remove what an interrupted batch left half written (Data Designer discards it on resume anyway)."""
    shutil.rmtree(work_dir / artifact_layout.DATASET_NAME / artifact_layout.PARTIAL_BATCHES, ignore_errors=True)
    shutil.rmtree(
        work_dir / artifact_layout.DATASET_NAME / artifact_layout.OUTPUT_PROCESSORS_DATASET, ignore_errors=True
    )
