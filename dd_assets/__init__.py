"""dd_assets: NVIDIA NeMo Data Designer workflows as Dagster software-defined assets."""

import os

# Offline-safe default: Data Designer reads this once, at import, and otherwise sends telemetry.
os.environ.setdefault("NEMO_TELEMETRY_ENABLED", "false")

# The installed Data Designer is checked before any module of dd_assets reaches into it.
from dd_assets.engine.data_designer_surface import check_data_designer_compatibility  # noqa: E402

check_data_designer_compatibility()

from dd_assets.assets.component import DataDesignerWorkflowComponent  # noqa: E402
from dd_assets.assets.translator import DataDesignerStageTranslator  # noqa: E402
from dd_assets.assets.workflow_definitions import build_workflow_definitions  # noqa: E402
from dd_assets.engine.resource import DataDesignerResource  # noqa: E402
from dd_assets.run.stage_scope import StageRunConfig  # noqa: E402
from dd_assets.spec.callable_identity import versioned  # noqa: E402
from dd_assets.spec.definition_error import WorkflowDefinitionError  # noqa: E402
from dd_assets.spec.workflow import Stage, Workflow  # noqa: E402
from dd_assets.storage.dataset import StageDataset  # noqa: E402
from dd_assets.storage.io_manager import StageParquetIOManager  # noqa: E402

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
