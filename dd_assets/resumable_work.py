"""Work directories: where a stage generates, kept after a failure so the next run resumes its batches.

A work directory is named by the stage's work key (:func:`dd_assets.versioning.generation_work_key`) and
holds ``inputs.json`` (the generation inputs the key hashes), the seed, and Data Designer's artifacts. A rerun
with the same inputs resumes there; a rerun with other inputs starts in a new directory and says why
(:func:`describe_superseded_work`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

INPUTS_FILE = "inputs.json"
ARTIFACTS = "artifacts"
BATCHES = "parquet-files"
PARTIAL_BATCHES = "tmp-partial-parquet-files"

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
}


def write_inputs(work_dir: Path, inputs: dict[str, Any]) -> None:
    """Record the generation inputs of a work directory (read back by :func:`describe_superseded_work`)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / INPUTS_FILE).write_text(json.dumps(inputs, indent=2, sort_keys=True, default=str))


def finished_batches(work_dir: Path) -> int:
    """How many finished batches a work directory holds."""
    return len(list((work_dir / ARTIFACTS / BATCHES).glob("batch_*.parquet")))


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
    metadata = _batch_metadata(artifacts_dir)
    if metadata is None:
        return 0, True  # Data Designer decides (and explains) whether it can resume
    short = short_batches(artifacts_dir)
    dropped = sum(missing for _, missing in short)
    target = int(metadata["target_num_records"])
    # batches not finished yet are generated on resume anyway: only the dropped records can keep it short
    if not short or target - dropped >= completion_threshold * target:
        return 0, True
    if metadata.get("post_generation_processed") or metadata.get("post_generation_state"):
        return 0, False
    for path, _ in short:
        path.unlink()
    return len(short), True


def _batch_metadata(artifacts_dir: Path) -> dict[str, Any] | None:
    try:
        metadata = json.loads((artifacts_dir / "metadata.json").read_text())
        int(metadata["buffer_size"]), int(metadata["target_num_records"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return metadata


def all_batches_finished(artifacts_dir: Path) -> bool:
    """Whether every batch of the target is on disk (the resume then makes no generation request)."""
    metadata = _batch_metadata(artifacts_dir)
    if metadata is None:
        return False
    buffer_size, target = int(metadata["buffer_size"]), int(metadata["target_num_records"])
    planned = -(-target // buffer_size)
    present = {path.stem for path in (artifacts_dir / BATCHES).glob("batch_*.parquet")}
    return planned > 0 and all(f"batch_{index:05d}" in present for index in range(planned))


def short_batches(artifacts_dir: Path, written_since: float | None = None) -> list[tuple[Path, int]]:
    """Finished batch files holding fewer records than planned, with how many each lacks (optionally only those
    written at or after ``written_since``, a ``time.time()``)."""
    metadata = _batch_metadata(artifacts_dir)
    if metadata is None:
        return []
    buffer_size, target = int(metadata["buffer_size"]), int(metadata["target_num_records"])
    short = []
    for path in sorted((artifacts_dir / BATCHES).glob("batch_*.parquet")):
        try:
            index = int(path.stem.split("_", 1)[1])
            rows = pq.read_metadata(path).num_rows
            written = path.stat().st_mtime
        except (ValueError, IndexError, OSError):
            continue
        planned = min(buffer_size, target - index * buffer_size)
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
    shutil.rmtree(work_dir / ARTIFACTS / PARTIAL_BATCHES, ignore_errors=True)
    shutil.rmtree(work_dir / ARTIFACTS / "output-processors", ignore_errors=True)
