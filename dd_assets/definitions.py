"""The example project: ``quickstart`` (offline) and ``doc_qa`` (LLM) as Dagster assets.

Environment:
    DD_ASSETS_BASE_DIR      where stages are stored (default ``data``; a path or an fsspec URL)
    DD_ASSETS_LLM_ENDPOINT  OpenAI-compatible endpoint for ``doc_qa`` (see the README for the rest)
"""

from __future__ import annotations

import os

import dagster as dg

from dd_assets.examples.doc_qa import doc_qa_workflow, llm_provider_from_env
from dd_assets.examples.quickstart import quickstart_workflow
from dd_assets.io_manager import StageParquetIOManager
from dd_assets.resource import DataDesignerResource
from dd_assets.workflow_definitions import build_workflow_definitions


def build_example_definitions() -> dg.Definitions:
    """Definitions of the example project, configured from the environment."""
    provider = llm_provider_from_env()
    return build_workflow_definitions(
        [quickstart_workflow(), doc_qa_workflow()],
        data_designer=DataDesignerResource(
            model_providers=[provider] if provider else None,
            setup_hint="doc_qa reads its provider from DD_ASSETS_LLM_ENDPOINT and DD_ASSETS_LLM_API_KEY (see README)",
        ),
        io_manager=StageParquetIOManager(base_dir=os.environ.get("DD_ASSETS_BASE_DIR", "data")),
    )


defs = build_example_definitions()
