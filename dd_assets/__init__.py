"""dd_assets: NVIDIA NeMo Data Designer workflows as Dagster software-defined assets."""

import os

# Offline-safe default: Data Designer reads this once, at import, and otherwise sends telemetry.
os.environ.setdefault("NEMO_TELEMETRY_ENABLED", "false")

# The installed Data Designer is checked before any module of dd_assets reaches into it.
from dd_assets.data_designer_surface import check_data_designer_compatibility  # noqa: E402

check_data_designer_compatibility()

from dd_assets.callable_identity import versioned  # noqa: E402
from dd_assets.component import DataDesignerWorkflowComponent  # noqa: E402
from dd_assets.dataset import StageDataset  # noqa: E402
from dd_assets.io_manager import StageParquetIOManager  # noqa: E402
from dd_assets.resource import DataDesignerResource  # noqa: E402
from dd_assets.spec import Stage, Workflow, WorkflowDefinitionError  # noqa: E402
from dd_assets.stage_runner import StageRunConfig  # noqa: E402
from dd_assets.translator import DataDesignerStageTranslator  # noqa: E402
from dd_assets.workflow_definitions import build_workflow_definitions  # noqa: E402

__all__ = [
    "DataDesignerWorkflowComponent",
    "DataDesignerResource",
    "DataDesignerStageTranslator",
    "Stage",
    "StageDataset",
    "StageParquetIOManager",
    "StageRunConfig",
    "Workflow",
    "WorkflowDefinitionError",
    "build_workflow_definitions",
    "versioned",
]
