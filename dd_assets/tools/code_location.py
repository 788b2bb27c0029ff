"""The code location a ``dd-assets`` command works on: its ``dg.Definitions`` and the workflows built into them.

Found like ``dagster``'s: ``-m`` imports a module, ``-f`` runs a file; the first ``dg.Definitions`` in it (``defs``
preferred) is used. Without either, ``dd_assets.definitions`` (the example project). The workflows are read from
the Definitions' own assets (:func:`~dd_assets.assets.asset_factory.workflow_of`), nothing from process-wide state.
"""

from __future__ import annotations

import importlib
import logging
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from dd_assets.assets.asset_factory import workflow_of
from dd_assets.assets.load_errors import LOAD_ERROR_METADATA
from dd_assets.assets.translator import IO_MANAGER_KEY
from dd_assets.spec import load_failures
from dd_assets.spec.workflow import Stage, Workflow
from dd_assets.storage.io_manager import StageParquetIOManager
from dd_assets.tools.command_error import CommandError


@dataclass
class CodeLocation:
    """The definitions of a module or file, the dd_assets workflows they were built from and each stage's spec."""

    defs: dg.Definitions
    workflows: dict[str, Workflow]
    specs: dict[tuple[str, str], dg.AssetSpec] = field(default_factory=dict)
    load_errors: list[str] = field(default_factory=list)  # workflow files that did not load (assets/load_errors.py)

    @property
    def io_manager(self) -> StageParquetIOManager:
        return self.defs.resources[IO_MANAGER_KEY]

    def unknown_workflow(self, name: str) -> CommandError:
        """No workflow ``name``: the known ones, and the files that did not load (one of them may be it)."""
        known = ", ".join(sorted(self.workflows)) or "none"
        broken = f"; {len(self.load_errors)} workflow file(s) did not load, see above" if self.load_errors else ""
        return CommandError(f"unknown workflow {name!r} (workflows: {known}{broken})", code=2)

    def stage(self, ref: str) -> tuple[Workflow, Stage]:
        """``WORKFLOW/STAGE`` -> the workflow and stage; a clear error naming what exists otherwise."""
        workflow_name, _, stage_name = ref.partition("/")
        if not stage_name:
            raise CommandError(f"{ref!r}: give a stage as WORKFLOW/STAGE", code=2)
        workflow = self.workflows.get(workflow_name)
        if workflow is None:
            raise self.unknown_workflow(workflow_name)
        try:
            return workflow, workflow.stage(stage_name)
        except KeyError:
            known = ", ".join(s.name for s in workflow.stages)
            raise CommandError(
                f"workflow {workflow_name!r} has no stage {stage_name!r} (stages: {known})", code=2
            ) from None


def load_code_location(module: str | None, file: str | None) -> CodeLocation:
    """Import ``module`` or run ``file`` and take its ``dg.Definitions`` and the workflows built into it."""
    load_failures.logger.setLevel(logging.ERROR)  # the command reports the files that do not load itself

    if file:
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"-f {file}: no such file", code=2)
        sys.path.insert(0, str(path.resolve().parent))
        namespace = runpy.run_path(str(path))
    else:
        name = module or "dd_assets.definitions"
        sys.path.insert(0, str(Path.cwd()))
        try:
            namespace = vars(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            raise CommandError(f"-m {name}: {exc}", code=2) from None
    candidates = [namespace.get("defs")] + list(namespace.values())
    defs = next((value for value in candidates if isinstance(value, dg.Definitions)), None)
    if defs is None:
        raise CommandError(f"{file or module}: no dg.Definitions found", code=2)
    workflows: dict[str, Workflow] = {}
    specs: dict[tuple[str, str], dg.AssetSpec] = {}
    load_errors: list[str] = []
    for assets_def in defs.assets or []:
        workflow = workflow_of(assets_def) if isinstance(assets_def, dg.AssetsDefinition) else None
        if workflow is None:
            for spec in assets_def.specs if isinstance(assets_def, dg.AssetsDefinition) else []:
                error = spec.metadata.get(LOAD_ERROR_METADATA)
                if error is not None:
                    load_errors.append(str(getattr(error, "value", error)))
            continue
        workflows[workflow.name] = workflow
        for spec in assets_def.specs:  # the specs as the code location's translator made them
            stage = spec.metadata.get("dd_assets/stage")
            specs[(workflow.name, getattr(stage, "value", stage))] = spec
    if not workflows:
        if load_errors:
            raise CommandError("\n".join(load_errors), code=2)
        raise CommandError(f"{file or module}: its definitions hold no dd_assets workflow", code=2)
    return CodeLocation(defs=defs, workflows=workflows, specs=specs, load_errors=load_errors)
