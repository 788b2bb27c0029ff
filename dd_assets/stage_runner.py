"""Running one stage: seed, generate with the shared DataDesigner, select the output, describe it.

Mirrors ``CompositeWorkflow.run()`` for one stage (Data Designer's
``data_designer/interface/composite_workflow.py``) and goes past it: joins, external upstreams,
run-config overrides, resume keyed by the work a run does, and an output the IO manager publishes.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
from data_designer.config.config_builder import DataDesignerConfigBuilder
from data_designer.config.seed_source import LocalFileSeedSource
from data_designer.config.utils.constants import DEFAULT_NUM_RECORDS
from data_designer.engine.storage.artifact_storage import ResumeMode
from upath import UPath

from dd_assets.checks import safe_check_results
from dd_assets.dataset import StageDataset
from dd_assets.io_manager import StageOutput, StageParquetIOManager
from dd_assets.log_bridge import data_designer_logs_to_dagster, redact
from dd_assets.metadata import compact_column_statistics, stage_metadata
from dd_assets.resource import DataDesignerResource
from dd_assets.seeds import Seed, as_stage_dataset, build_seed, own_seed_rows, upstream_label
from dd_assets.spec import Stage, Workflow, load_stage_config
from dd_assets.stage_lock import StageBusyError
from dd_assets.versioning import hash_json, parquet_data_version


class StageRunConfig(dg.Config):
    """Per-materialization settings of a stage (launchpad / ``--config``).

    Attributes:
        num_records: records to generate this run; overrides ``Stage.num_records`` and the seed size.
        output_override: a parquet file or directory that replaces the stage's output; the stage makes
            no model call (like Data Designer's ``stage_output_overrides``, without generating first).
    """

    num_records: int | None = None
    output_override: str | None = None


class StageFailure(dg.Failure):
    """A stage cannot run; the message names the workflow and the stage."""


@dataclass
class StageRun:
    """One materialization of one stage."""

    context: dg.AssetExecutionContext
    workflow: Workflow
    stage: Stage
    config: StageRunConfig
    code_version: str
    resource: DataDesignerResource
    io_manager: StageParquetIOManager
    upstream_keys: dict[str | dg.AssetKey, dg.AssetKey]
    check_results: list[dg.AssetCheckResult] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"workflow {self.workflow.name!r}, stage {self.stage.name!r}"

    def fail(self, message: str) -> StageFailure:
        return StageFailure(description=f"{self.where}: {message}")

    # ---------------------------------------------------------------------------------------------
    def run(self, upstream_values: dict[str | dg.AssetKey, Any]) -> dg.Output:
        """Run the stage; the returned output is published by the IO manager."""
        inputs_dir = self.io_manager.work_dir(self.workflow.name, self.stage.name, f"inputs-{self.context.run.run_id}")
        try:
            self.io_manager.lock_stage(self.workflow.name, self.stage.name, self.context.run.run_id)
        except StageBusyError as exc:
            raise StageFailure(description=str(exc)) from exc
        except OSError as exc:
            raise self.fail(f"cannot write to {self.io_manager.base_dir!r} ({exc}); nothing was changed") from exc
        try:
            return self._run(upstream_values, inputs_dir)
        except OSError as exc:
            self.io_manager.unlock_stage(self.workflow.name, self.stage.name)
            shutil.rmtree(inputs_dir, ignore_errors=True)
            raise self.fail(f"storage error ({exc}); the published output is unchanged") from exc
        except BaseException:
            self.io_manager.unlock_stage(self.workflow.name, self.stage.name)
            shutil.rmtree(inputs_dir, ignore_errors=True)  # the work directory itself stays, for resume
            raise

    def _run(self, upstream_values: dict[str | dg.AssetKey, Any], inputs_dir: Path) -> dg.Output:
        started = time.monotonic()
        stage = self.stage
        if self.config.num_records is not None and self.config.num_records < 1:
            raise self.fail(f"run config num_records must be a positive integer, got {self.config.num_records}")

        # External upstreams arrive as whatever their IO manager loads: write them as parquet first.
        upstreams = {
            dep: as_stage_dataset(value, where=self.where, work_dir=inputs_dir, name=upstream_label(dep))
            for dep, value in upstream_values.items()
        }
        upstream_versions = {upstream_label(dep): _data_version_of(ds) for dep, ds in upstreams.items()}
        # The work directory is keyed by everything that decides the output, so a rerun of the same
        # work resumes its finished batches and any change starts fresh.
        run_settings = self.resource.data_designer_run_config().model_dump(mode="json")
        work_key = hash_json([self.code_version, upstream_versions, self.config.num_records, run_settings])[:16]
        work_dir = self.io_manager.work_dir(self.workflow.name, stage.name, work_key)
        work_dir.mkdir(parents=True, exist_ok=True)
        try:
            seed = build_seed(stage, upstreams, self.upstream_keys, work_dir, where=self.where)
        except ValueError as exc:
            raise self.fail(str(exc).removeprefix(f"{self.where}, ")) from exc

        record: dict[str, Any] = {
            "workflow": self.workflow.name,
            "stage": stage.name,
            "code_version": self.code_version,
            "upstream": {
                upstream_label(dep): {
                    "asset_key": self.upstream_keys[dep].to_user_string(),
                    "data_version": upstream_versions[upstream_label(dep)],
                    "rows": upstreams[dep].num_rows,
                }
                for dep in stage.depends_on
            },
            "run_id": self.context.run.run_id,
            "work_key": work_key,
            "resumed": False,
            "model_usage": {},
        }
        seed_rows = seed.num_rows if seed else own_seed_rows(stage.builder)
        num_records = self.config.num_records or stage.num_records or seed_rows
        record["num_records_requested"] = num_records or DEFAULT_NUM_RECORDS

        artifacts_dir: Path | None = None
        analysis = None
        generated_files: list[Path] = []
        if self.config.output_override:
            files = self._override_files(self.config.output_override)
            record.update(status="overridden", num_records_actual=0, output_override=self.config.output_override)
        elif seed is not None and seed.num_rows == 0:
            empty = [dep for dep in stage.depends_on if upstreams[dep].is_empty]
            cause = (
                f"upstream {', '.join(map(upstream_label, empty))} is empty" if empty else "the combined seed is empty"
            )
            self.context.log.info(f"{self.where}: {cause}; skipping without model calls")
            files = [self._write_empty(work_dir, seed, upstreams)]
            record.update(
                status="skipped_empty_upstream",
                num_records_actual=0,
                upstream_stage=upstream_label(empty[0]) if empty else None,
            )
        else:
            files, artifacts_dir, analysis, generated_files = self._generate(
                work_dir, seed, record["num_records_requested"], record
            )

        dataset = StageDataset.from_files(UPath(work_dir), [UPath(f) for f in files])
        if dataset.num_rows == 0 and record.get("status") is None:
            if not stage.allow_empty:
                raise self.fail(
                    "produced an empty output; set allow_empty=True to accept it (downstream stages are then skipped)"
                )
            record["status"] = "completed_empty"
        record.setdefault("status", "completed")
        if record["status"] == "overridden" and dataset.num_rows == 0 and not stage.allow_empty:
            raise self.fail(f"output_override {self.config.output_override!r} has no rows and allow_empty is False")

        record.update(
            output_rows=dataset.num_rows,
            data_version=parquet_data_version(files),
            materialized_at=datetime.now(UTC).isoformat(),
            duration_s=round(time.monotonic() - started, 3),
        )
        self.check_results = safe_check_results(stage, record, dataset.num_rows, generated_files)
        column_statistics = compact_column_statistics(analysis)
        record["column_statistics"] = column_statistics
        builder = stage.builder
        metadata = stage_metadata(
            dataset=dataset,
            uri=str(self.io_manager.stage_dir(self.workflow.name, stage.name) / "data"),
            builder=builder,
            seed=seed,
            record=record,
            column_statistics=column_statistics,
        )
        output = StageOutput(
            work_dir=work_dir,
            files=[Path(f) for f in files],
            record=record,
            artifacts_dir=artifacts_dir,
            extra_cleanup=[inputs_dir],
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dg.BetaWarning)  # Output(data_version=...) is beta in Dagster 1.13
            return dg.Output(
                output,
                output_name=self.context.assets_def.get_output_name_for_asset_key(self.context.asset_key),
                data_version=dg.DataVersion(record["data_version"]),
                metadata=metadata,
            )

    # ---------------------------------------------------------------------------------------------
    def _generate(
        self, work_dir: Path, seed: Seed | None, num_records: int, record: dict[str, Any]
    ) -> tuple[list[Path], Path, Any, list[Path]]:
        stage = self.stage
        builder = load_stage_config(stage.builder)
        if seed is not None:
            if builder.get_seed_config() is not None:
                self.context.log.warning(f"{self.where}: the config's own seed is replaced by the upstream output")
            builder.with_seed_dataset(
                LocalFileSeedSource(path=seed.glob),
                sampling_strategy=stage.sampling_strategy,
                selection_strategy=stage.selection_strategy,
            )
        self._check_models(builder)
        data_designer = self.resource.get_data_designer()
        try:
            data_designer.register_stage_models(builder, owner=self.where)
        except ValueError as exc:
            raise self.fail(str(exc).removeprefix(f"{self.where}: ")) from exc
        registry = data_designer.shared_registry

        artifacts_dir = work_dir / "artifacts"
        resume = ResumeMode.NEVER
        if (artifacts_dir / "metadata.json").exists():
            resume = ResumeMode.ALWAYS
            self.context.log.info(f"{self.where}: resuming from the batches already written in {artifacts_dir}")
        elif artifacts_dir.exists():
            shutil.rmtree(artifacts_dir)
        record["resumed"] = resume == ResumeMode.ALWAYS

        snapshot = registry.usage_snapshot()
        prefix = f"[{self.workflow.name}/{stage.name}] "
        secrets = self.resource.secret_values()
        try:
            with data_designer_logs_to_dagster(self.context, prefix, secrets):
                try:
                    result = data_designer.create(
                        builder,
                        num_records=num_records,
                        dataset_name="artifacts",
                        artifact_path=work_dir,
                        resume=resume,
                    )
                except Exception as exc:
                    if resume != ResumeMode.ALWAYS or "resume" not in str(exc).lower():
                        raise
                    # Data Designer refuses some resumes (interrupted post-processing, changed artifact policy):
                    # rather than failing the same way on every retry, start this work fresh.
                    self.context.log.warning(f"{self.where}: cannot resume ({exc}); generating from the start")
                    shutil.rmtree(artifacts_dir, ignore_errors=True)
                    record["resumed"] = False
                    result = data_designer.create(
                        builder, num_records=num_records, dataset_name="artifacts", artifact_path=work_dir
                    )
                record["num_records_actual"] = result.count_records()
                output_result = result
                if stage.output_processors:
                    output_result = self._run_output_processors(data_designer, builder, result, artifacts_dir)
        except Exception as exc:
            record["model_usage"] = registry.usage_since(snapshot)
            models = _models_used(builder)
            reason = redact(str(exc), secrets)
            raise self.fail(f"generation failed{f' ({models})' if models else ''}: {reason}") from exc
        finally:
            record["model_usage"] = registry.usage_since(snapshot)

        if stage.on_success is not None:
            try:
                selected = Path(stage.on_success(result.artifact_storage.base_dataset_path))
            except Exception as exc:
                raise self.fail(f"on_success raised {redact(repr(exc), secrets)}") from exc
        else:
            selected = self._selected_output(result, output_result)
        files = _parquet_files(selected)
        if not files:
            raise self.fail(f"the selected output {str(selected)!r} has no parquet files")
        try:
            analysis = result.load_analysis()
        except Exception:
            analysis = None
        return files, artifacts_dir, analysis, _parquet_files(result.artifact_storage.final_dataset_path)

    def _run_output_processors(self, data_designer, builder: DataDesignerConfigBuilder, result, artifacts_dir: Path):
        output_dir = artifacts_dir / "output-processors"
        if output_dir.exists():
            shutil.rmtree(output_dir)
        processor_builder = DataDesignerConfigBuilder(
            model_configs=builder.model_configs, tool_configs=builder.tool_configs
        ).with_seed_dataset(LocalFileSeedSource(path=str(result.artifact_storage.final_dataset_path / "*.parquet")))
        for processor in self.stage.output_processors:
            processor_builder.add_processor(processor.model_copy(deep=True))
        return data_designer.create(
            processor_builder,
            num_records=result.count_records(),
            dataset_name="output-processors",
            artifact_path=artifacts_dir,
        )

    def _selected_output(self, result, output_result) -> Path:
        output = self.stage.output
        if output == "final":
            return output_result.artifact_storage.final_dataset_path
        name = output.removeprefix("processor:")
        source = output_result if name in {p.name for p in self.stage.output_processors} else result
        base = source.artifact_storage.processors_outputs_path
        for candidate in (base / name, base / f"{name}.parquet"):
            if candidate.exists():
                return candidate
        raise self.fail(f"processor {name!r} produced no artifacts (looked in {base})")

    def _check_models(self, builder: DataDesignerConfigBuilder) -> None:
        """Fail before any generation when a model alias or its provider is not configured."""
        aliases = sorted({a for c in builder.get_column_configs() for a in c.get_model_aliases()})
        if not aliases:
            return
        configs = {m.alias: m for m in builder.model_configs}
        providers = {p.name for p in self.resource.providers()}
        for alias in aliases:
            model = configs.get(alias)
            if model is None:
                raise self.fail(f"model alias {alias!r} has no model config in the stage config (field 'config')")
            if model.provider not in providers:
                configured = ", ".join(sorted(providers)) or "none"
                raise self.fail(
                    f"model alias {alias!r} uses provider {model.provider!r}, which is not configured on the "
                    f"DataDesignerResource (configured: {configured}); add it to model_providers"
                    + (f". {self.resource.setup_hint}" if self.resource.setup_hint else "")
                )

    def _override_files(self, override: str) -> list[Path]:
        path = Path(override).expanduser()
        files = _parquet_files(path)
        if not files:
            raise self.fail(f"output_override {override!r} is not a parquet file or a directory of parquet files")
        for file in files:
            try:
                pq.read_metadata(file)
            except Exception as exc:
                raise self.fail(f"output_override file {str(file)!r} is not readable parquet: {exc}") from exc
        return files

    def _write_empty(self, work_dir: Path, seed: Seed, upstreams: dict[Any, StageDataset]) -> Path:
        import pyarrow as pa

        seed_files = sorted(Path(seed.glob).parent.glob("*.parquet"))
        try:
            schema = pa.unify_schemas([pq.read_schema(f) for f in seed_files]) if seed_files else pa.schema([])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise self.fail(f"upstream schemas do not combine: {exc}") from exc
        target = work_dir / "empty.parquet"
        pq.write_table(schema.empty_table(), target)
        return target


def _data_version_of(dataset: StageDataset) -> str:
    return dataset.record.get("data_version") or parquet_data_version(dataset.files)


def _parquet_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob("*.parquet"))
    if path.is_file():
        return [path]
    return []


def _models_used(builder: DataDesignerConfigBuilder) -> str:
    """'model alias 'a' (model 'm') on provider 'p', ...' for the LLM columns of a config."""
    configs = {m.alias: m for m in builder.model_configs}
    aliases = sorted({a for c in builder.get_column_configs() for a in c.get_model_aliases()})
    return ", ".join(
        f"model alias {alias!r} (model {configs[alias].model!r}) on provider {configs[alias].provider!r}"
        if alias in configs
        else f"model alias {alias!r}"
        for alias in aliases
    )
