"""Data Designer's artifact layout: the names of what ``DataDesigner.create()`` writes in a stage's work directory.

A stage generates with ``dataset_name="artifacts"``, so Data Designer writes under ``<work dir>/artifacts/``:

- ``parquet-files/batch_NNNNN.parquet``: one file per finished batch (the stage's records);
- ``tmp-partial-parquet-files/``: the batch in progress (resume discards it);
- ``dropped-columns-parquet-files/batch_N.parquet`` and ``processors-files/<processor>/batch_N.parquet``: written
  beside each batch;
- ``metadata.json``: the run's buffer size, target records and config hash (what resume reads);
- ``output-processors/``: the second ``create()`` that runs a stage's ``output_processors`` on its output.

Every module that reads or writes these names takes them from here.
"""

from __future__ import annotations

from pathlib import Path

DATASET_NAME = "artifacts"
BATCHES = "parquet-files"
PARTIAL_BATCHES = "tmp-partial-parquet-files"
BATCH_GLOB = "batch_*.parquet"
DROPPED_COLUMNS = "dropped-columns-parquet-files"
PROCESSOR_OUTPUTS = "processors-files"
METADATA = "metadata.json"
OUTPUT_PROCESSORS_DATASET = "output-processors"  # the dataset of the second create() of a stage's output_processors


def artifacts_dir(work_dir: Path) -> Path:
    """Where Data Designer writes a stage's artifacts inside its work directory."""
    return work_dir / DATASET_NAME


def batches_dir(work_dir: Path) -> Path:
    """The finished batches of a stage generating in ``work_dir``."""
    return artifacts_dir(work_dir) / BATCHES
