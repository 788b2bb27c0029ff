"""``dd-assets preview``: Data Designer's preview of one stage on its real upstream, nothing published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg

from dd_assets.assets.translator import RESOURCE_KEY
from dd_assets.spec.workflow import Stage
from dd_assets.storage.records import StageStorageError
from dd_assets.tools.code_location import CodeLocation
from dd_assets.tools.command_error import CommandError


def preview(location: CodeLocation, ref: str, num_records: int) -> Any:
    """Data Designer's preview of one stage on its real upstream seed, as the stage would publish it (its output
    processors run and its ``output`` selected); nothing is published."""
    import tempfile

    from dd_assets.engine.stage_context import StageContext, running_stage
    from dd_assets.engine.stage_guard import StageGuard
    from dd_assets.run.generation_failures import generation_failure_reason
    from dd_assets.run.model_setup import model_setup_problem, models_used
    from dd_assets.run.seeds import build_seed, builder_with_seed

    workflow, stage = location.stage(ref)
    io_manager = location.io_manager
    where = f"workflow {workflow.name!r}, stage {stage.name!r}"
    if stage.on_success is not None:
        raise CommandError(f"{where}: its output is what on_success returns, which a preview cannot run", code=2)
    upstreams = {}
    for dep in stage.depends_on:
        if not isinstance(dep, str):
            raise CommandError(f"{ref} reads the external asset {dep.to_user_string()!r}, which dd-assets cannot load")
        try:
            upstreams[dep] = io_manager.read_stage(
                workflow.name, dep, partitions_def=workflow.stage(dep).partitions_def
            )
        except StageStorageError as exc:
            raise CommandError(f"{ref}: its upstream cannot be read: {exc}") from None
    resource = location.defs.resources[RESOURCE_KEY]
    with tempfile.TemporaryDirectory(prefix="dd-assets-preview-") as tmp:
        keys = {dep: dg.AssetKey([workflow.name, dep]) for dep in upstreams}
        try:
            seed = build_seed(stage, upstreams, keys, Path(tmp), where=where)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        builder = builder_with_seed(stage, seed, stage.selection_strategy)
        problem = model_setup_problem(builder, resource, stage.description)  # the check a run makes before generating
        if problem:
            raise CommandError(f"{where}: {problem}")
        data_designer = resource.get_data_designer()
        try:
            data_designer.register_stage_models(builder, owner=where)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        guard = StageGuard(stall_timeout_s=stage.stall_timeout_s or resource.stall_timeout_s, token_budget=None)
        guard.start()
        try:
            with running_stage(StageContext(label=f"{workflow.name}/{stage.name}", guard=guard)):
                return _published_preview(stage, data_designer, builder, num_records, Path(tmp))
        except CommandError:
            raise
        except Exception as exc:  # the provider's answer (which may echo a key) is redacted on the way out
            models = models_used(builder, resource)
            reason = guard.stop_reason or generation_failure_reason(exc, guard.failure_report())
            raise CommandError(f"{where}: preview failed: {reason}{f' ({models})' if models else ''}") from None
        finally:
            guard.stop_watching()


def _published_preview(stage: Stage, data_designer: Any, builder: Any, num_records: int, tmp: Path) -> Any:
    """Preview ``builder``, then run the stage's output processors on it and select its ``output``."""
    import pandas as pd

    from dd_assets.run.stage_output import output_processors_builder

    result = data_designer.preview(builder, num_records=num_records)
    dataset, processor_outputs = result.dataset, dict(result.processor_artifacts or {})
    if stage.output_processors:
        generated = tmp / "generated.parquet"
        dataset.to_parquet(generated)
        processed = data_designer.preview(
            output_processors_builder(stage, builder, str(generated)), num_records=len(dataset)
        )
        dataset = processed.dataset
        processor_outputs.update(processed.processor_artifacts or {})
    if stage.output == "final":
        return dataset
    name = stage.output.removeprefix("processor:")
    if name not in processor_outputs:
        raise CommandError(f"processor {name!r} produced no output in the preview")
    return pd.DataFrame(processor_outputs[name])
