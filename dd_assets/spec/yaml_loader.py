"""The YAML workflow format: loading files and folders, and the JSON Schema shipped with the package.

A workflow file::

    name: quickstart
    stages:
      - name: customers
        config: configs/customers.yaml   # relative to this file, or an inline mapping
        num_records: 300
      - name: orders
        config: configs/orders.yaml
        depends_on: [customers, raw/docs]   # stage names, or asset key paths with '/'
        combine: my_pkg.joins:first_rows    # 'concat', 'zip' or module:function
        output_processors:
          - {processor_type: drop_columns, name: drop_pricing, column_names: [unit_price]}

Every mistake raises a :class:`~dd_assets.spec.definition_error.WorkflowDefinitionError` naming the file, the workflow,
the stage and the field. The keys are the fields of ``Stage`` and ``Workflow``, as their definitions
(:mod:`dd_assets.spec.field_specs`) write them; the reading: :mod:`dd_assets.spec.yaml_reading`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dd_assets.spec.definition_error import WorkflowDefinitionError
from dd_assets.spec.load_failures import WorkflowLoadFailure, keep_or_raise
from dd_assets.spec.workflow import Stage, Workflow
from dd_assets.spec.yaml_reading import read_workflow_yaml, workflow_from_data, yaml_models

SCHEMA_FILE = Path(__file__).parent.parent / "workflow.schema.json"  # shipped at the package root

WorkflowModel = yaml_models(Workflow, Stage)[0]  # built on import: a field without a definition fails here


def workflow_json_schema() -> dict[str, Any]:
    """The JSON Schema of the YAML format (what ``workflow.schema.json`` ships)."""
    schema = WorkflowModel.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def inline_workflow_schema() -> dict[str, Any]:
    """The workflow schema with its ``$defs`` written in place, to embed in another schema (the Component's)."""
    schema = WorkflowModel.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {key: value for key, value in inline(schema).items() if key not in ("title", "description", "type")}


def workflow_from_mapping(data: Any, *, base_dir: Path, file: str = "<inline>") -> Workflow:
    """Build a :class:`Workflow` from the parsed YAML mapping; paths resolve against ``base_dir``."""
    return workflow_from_data(data, base_dir=base_dir, file=file, workflow_type=Workflow, stage_type=Stage)


def load_workflow_yaml(path: str | Path) -> Workflow:
    """Load one workflow YAML file (as ``Workflow.from_yaml``)."""
    return read_workflow_yaml(path, workflow_type=Workflow, stage_type=Stage)


def load_workflow_dir(directory: str | Path, failures: list | None = None) -> list[Workflow]:
    """Every ``*.yaml`` / ``*.yml`` workflow in a directory (sorted); a name used twice is an error.

    With ``failures`` (a list), a file that does not load is appended to it as a
    :class:`~dd_assets.spec.load_failures.WorkflowLoadFailure` and the other files still load (except under definitions
    validation: see :func:`~dd_assets.spec.load_failures.strict_loading`); without it, the first error is raised.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise WorkflowDefinitionError(f"workflows directory {str(directory)!r} does not exist")
    workflows: list[Workflow] = []
    seen: dict[str, Path] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            workflow = load_workflow_yaml(path)
            if workflow.name in seen:
                raise WorkflowDefinitionError(
                    f"workflow name already used by {seen[workflow.name]}",
                    workflow=workflow.name,
                    field="name",
                    file=str(path),
                )
        except WorkflowDefinitionError as exc:
            keep_or_raise(failures, WorkflowLoadFailure(file=str(path), error=exc))
            continue
        seen[workflow.name] = path
        workflows.append(workflow)
    return workflows


def write_schema(path: Path = SCHEMA_FILE) -> None:
    """Regenerate the shipped JSON Schema (``python -m dd_assets.spec.yaml_loader``)."""
    path.write_text(json.dumps(workflow_json_schema(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_schema()
    print(f"wrote {SCHEMA_FILE}")
