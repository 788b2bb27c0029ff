"""Which files a stage run publishes: the output it selects of what Data Designer made, an override, or none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from data_designer.config.config_builder import DataDesignerConfigBuilder
from data_designer.config.seed_source import LocalFileSeedSource

from dd_assets.run.resumable_work import EMPTY_OUTPUT_FILE
from dd_assets.run.seeds import Seed
from dd_assets.run.stage_scope import StageScope
from dd_assets.spec.secrets import redact
from dd_assets.spec.stage_models import used_model_configs
from dd_assets.spec.workflow import Stage


def output_processors_builder(stage: Stage, builder: DataDesignerConfigBuilder, seed_path: str):
    """The config that runs ``stage.output_processors`` on the stage's generated dataset (at ``seed_path``)."""
    processor_builder = DataDesignerConfigBuilder(
        model_configs=used_model_configs(builder) or builder.model_configs, tool_configs=builder.tool_configs
    ).with_seed_dataset(LocalFileSeedSource(path=seed_path))
    for processor in stage.output_processors:
        processor_builder.add_processor(processor.model_copy(deep=True))
    return processor_builder


def selected_files(scope: StageScope, result: Any, output_result: Any) -> list[Path]:
    """The parquet files of the stage's output: what ``on_success`` returns, else the ``output`` it names."""
    stage = scope.stage
    if stage.on_success is not None:
        try:
            selected = Path(stage.on_success(result.artifact_storage.base_dataset_path))
        except Exception as exc:
            raise scope.fail(f"on_success raised {redact(repr(exc), scope.secrets)}") from None
    else:
        selected = _selected_output(scope, result, output_result)
    files = parquet_files(selected)
    if not files:
        raise scope.fail(f"the selected output {str(selected)!r} has no parquet files")
    return files


def _selected_output(scope: StageScope, result: Any, output_result: Any) -> Path:
    output = scope.stage.output
    if output == "final":
        return output_result.artifact_storage.final_dataset_path
    name = output.removeprefix("processor:")
    source = output_result if name in {p.name for p in scope.stage.output_processors} else result
    base = source.artifact_storage.processors_outputs_path
    for candidate in (base / name, base / f"{name}.parquet"):
        if candidate.exists():
            return candidate
    raise scope.fail(f"processor {name!r} produced no artifacts (looked in {base})")


def override_files(scope: StageScope, override: str) -> list[Path]:
    """The readable parquet files of a run config's ``output_override``."""
    path = Path(override).expanduser()
    files = parquet_files(path)
    if not files:
        raise scope.fail(f"output_override {override!r} is not a parquet file or a directory of parquet files")
    for file in files:
        try:
            pq.read_metadata(file)
        except Exception as exc:
            raise scope.fail(f"output_override file {str(file)!r} is not readable parquet: {exc}") from None
    return files


def write_empty(scope: StageScope, work_dir: Path, seed: Seed) -> Path:
    """An empty output with the columns of the (empty) seed, for a stage whose upstreams have no rows."""
    seed_files = sorted(Path(seed.glob).parent.glob("*.parquet"))
    try:
        schema = pa.unify_schemas([pq.read_schema(f) for f in seed_files]) if seed_files else pa.schema([])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise scope.fail(f"upstream schemas do not combine: {exc}") from None
    target = work_dir / EMPTY_OUTPUT_FILE
    pq.write_table(schema.empty_table(), target)
    return target


def parquet_files(path: Path) -> list[Path]:
    """A parquet file, or the parquet files of a directory (none when ``path`` does not exist)."""
    if path.is_dir():
        return sorted(path.glob("*.parquet"))
    if path.is_file():
        return [path]
    return []
