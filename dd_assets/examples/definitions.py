"""The example project: ``quickstart`` (offline), ``doc_qa`` (LLM) and every workflow YAML in a folder.

Environment:
    DD_ASSETS_BASE_DIR       where stages are stored (default ``data``; a path or an fsspec URL)
    DD_ASSETS_WORKFLOWS_DIR  folder of workflow YAML files to load (default: ``dd_assets/examples/workflows``)
    DD_ASSETS_EXAMPLE_FORM   ``python`` (default) or ``yaml``: which form of quickstart and doc_qa to load
    DD_ASSETS_LLM_ENDPOINT   OpenAI-compatible endpoint for ``doc_qa`` (see the README for the rest)
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from dd_assets.assets.component import workflow_resources
from dd_assets.assets.translator import IO_MANAGER_KEY, RESOURCE_KEY
from dd_assets.assets.workflow_definitions import build_workflow_definitions
from dd_assets.examples.doc_qa import doc_qa_workflow, llm_provider_from_env
from dd_assets.examples.quickstart import quickstart_workflow
from dd_assets.spec.definition_error import WorkflowDefinitionError
from dd_assets.spec.load_failures import WorkflowLoadFailure
from dd_assets.spec.workflow import Workflow
from dd_assets.spec.yaml_loader import load_workflow_dir, load_workflow_yaml

EXAMPLES_DIR = Path(__file__).parent
DEFAULT_WORKFLOWS_DIR = EXAMPLES_DIR / "workflows"
EXAMPLES_YAML_DIR = EXAMPLES_DIR / "yaml"


def example_workflows(form: str) -> list[Workflow]:
    """quickstart and doc_qa, from Python or from their YAML files (the same assets either way)."""
    if form == "python":
        return [quickstart_workflow(), doc_qa_workflow()]
    if form == "yaml":
        return [load_workflow_yaml(EXAMPLES_YAML_DIR / f"{name}.yaml") for name in ("quickstart", "doc_qa")]
    raise WorkflowDefinitionError(f"DD_ASSETS_EXAMPLE_FORM must be 'python' or 'yaml', got {form!r}")


def build_example_definitions() -> dg.Definitions:
    """Definitions of the example project, configured from the environment."""
    provider = llm_provider_from_env()
    workflows = example_workflows(os.environ.get("DD_ASSETS_EXAMPLE_FORM", "python"))
    failures: list[WorkflowLoadFailure] = []  # a broken file: the others still load (assets/load_errors.py)
    workflows += load_workflow_dir(os.environ.get("DD_ASSETS_WORKFLOWS_DIR", str(DEFAULT_WORKFLOWS_DIR)), failures)
    components = scaffolded_components()
    data_designer, io_manager = workflow_resources(
        base_dir=os.environ.get("DD_ASSETS_BASE_DIR", "data"), model_providers=[provider] if provider else None
    )
    # The components' very objects when they are configured alike, so the Definitions merge (Dagster merges a
    # resource key only when both hold one object); components configured otherwise fail with Dagster's
    # "different resources" message.
    held = components.resources or {}
    data_designer = held[RESOURCE_KEY] if held.get(RESOURCE_KEY) == data_designer else data_designer
    io_manager = held[IO_MANAGER_KEY] if held.get(IO_MANAGER_KEY) == io_manager else io_manager
    example = build_workflow_definitions(
        workflows, load_failures=failures, data_designer=data_designer, io_manager=io_manager
    )
    return dg.Definitions.merge(example, components)


def scaffolded_components() -> dg.Definitions:
    """The components ``dg scaffold defs`` wrote into this checkout's defs folder (``dd_assets/examples/defs``).

    Only in the checkout (its pyproject.toml names that folder for ``dg``); an installed package has none.
    """
    if not (EXAMPLES_DIR.parent.parent / "pyproject.toml").is_file():
        return dg.Definitions()
    return dg.load_from_defs_folder(path_within_project=EXAMPLES_DIR)


defs = build_example_definitions()
