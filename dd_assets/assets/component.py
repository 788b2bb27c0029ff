"""DataDesignerWorkflowComponent: a Dagster Component that turns one workflow YAML into assets.

In a ``dg`` project (``dg scaffold defs dd_assets.DataDesignerWorkflowComponent my_workflow``)::

    # defs/my_workflow/defs.yaml
    type: dd_assets.DataDesignerWorkflowComponent
    attributes:
      workflow_file: workflow.yaml        # relative to this folder; or `workflow:` with name and stages inline
      base_dir: data
      model_providers:
        - {name: local, endpoint: "http://127.0.0.1:8000/v1", api_key: LOCAL_KEY}
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Annotated, Any

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dd_assets.assets.load_errors import load_error_asset
from dd_assets.assets.workflow_definitions import build_workflow_definitions
from dd_assets.engine.resource import DataDesignerResource
from dd_assets.engine.stage_guard import DEFAULT_STALL_TIMEOUT_S
from dd_assets.spec.definition_error import WorkflowDefinitionError
from dd_assets.spec.field_specs import field_specs
from dd_assets.spec.known_fields import pydantic_field_names, unknown_fields, unknown_fields_reason
from dd_assets.spec.load_failures import WorkflowLoadFailure, keep_or_raise
from dd_assets.spec.workflow import Workflow
from dd_assets.spec.yaml_loader import inline_workflow_schema, load_workflow_yaml, workflow_from_mapping
from dd_assets.spec.yaml_values import automation_condition
from dd_assets.storage.io_manager import StageParquetIOManager

STARTER_WORKFLOW = """\
# yaml-language-server: $schema={schema}
name: {name}
stages:
  - name: people
    num_records: 100
    config:
      columns:
        - {{name: person_id, column_type: sampler, sampler_type: uuid, params: {{}}}}
        - name: city
          column_type: sampler
          sampler_type: category
          params: {{values: [Berlin, Lyon, Osaka, Lima]}}
  - name: greetings
    depends_on: [people]
    config:
      columns:
        - {{name: greeting, column_type: expression, expr: "Hello from {{{{ city }}}}!"}}
"""


def _workflow_override(name: str, note: str) -> Any:
    """The type of a component attribute that overrides the workflow field ``name``: the field's own YAML type and
    range (:mod:`dd_assets.spec.field_specs`), unset by default, described as the field and ``note``."""
    spec = field_specs(Workflow)[name]
    optional = name not in ("owners", "tags")  # empty lists and mappings add nothing
    return Annotated[spec.value_type(optional=optional), Field(description=f"{spec.description} {note}")]


ExecutionOverride = _workflow_override("execution", "Default: the workflow's own `execution`.")
MaxConcurrentStagesOverride = _workflow_override("max_concurrent_stages", "Default: the workflow's own.")
AutomationOverride = _workflow_override("automation_condition", "Replaces the workflow's own.")
OwnersOverride = _workflow_override("owners", "Before the workflow's and the stage's own.")
TagsOverride = _workflow_override("tags", "Under the workflow's and the stage's own.")


class DataDesignerWorkflowScaffolder(dg.Scaffolder):
    """Writes ``defs.yaml`` and a starter ``workflow.yaml`` (an offline, two-stage workflow)."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        from dd_assets.spec.yaml_loader import SCHEMA_FILE

        name = request.target_path.name.replace(".", "_").replace(" ", "_") or "workflow"
        dg.scaffold_component(request, {"workflow_file": "workflow.yaml", "base_dir": "data"})
        (request.target_path / "workflow.yaml").write_text(STARTER_WORKFLOW.format(name=name, schema=SCHEMA_FILE))


@dg.scaffold_with(DataDesignerWorkflowScaffolder)
class DataDesignerWorkflowComponent(dg.Component, dg.Resolvable, dg.Model):
    """One Data Designer workflow (a YAML file or inline stages) as Dagster assets.

    Attributes:
        workflow_file: path to a workflow YAML file, relative to the component's folder.
        workflow: the workflow inline (``name`` and ``stages``), instead of ``workflow_file``.
        base_dir: where stages are stored (path relative to the working directory, or an fsspec URL).
        model_providers: Data Designer model providers (``None``: Data Designer's defaults).
        run_config: Data Designer ``RunConfig`` fields.
        execution: ``per_stage`` or ``concurrent`` (default: the workflow's own ``execution``).
        max_concurrent_stages: in concurrent execution, at most this many stages at once.
        prices: dollars per million input and output tokens by model or alias (``DataDesignerResource.prices``).
        stall_timeout_s: fail a stage whose model calls wait this long without a success.
        automation: the automation of every stage that sets none (``eager``, ``on_missing``, ``{on_cron: ...}``);
            replaces the workflow's own.
        owners: asset owners of every stage, before the workflow's and the stage's own.
        tags: asset tags of every stage, under the workflow's and the stage's own.
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    workflow_file: str | None = Field(default=None, description="Workflow YAML file, relative to this folder.")
    # Taken as written: Dagster renders every attribute string as a native Jinja template, which would turn
    # on_success_version "2" into the int 2 and fail on Data Designer's own templates ("{{ text }}"). Its schema is
    # the YAML format's (workflow.schema.json), so editors of defs.yaml know every stage key.
    workflow: Annotated[
        dict[str, Any] | None,
        dg.Resolver(
            lambda context, value: value,
            inject_before_resolve=False,
            description="Inline workflow: name and stages, taken as written (no Dagster templating).",
            json_schema_extra=inline_workflow_schema(),
        ),
    ] = Field(default=None, description="Inline workflow: name and stages, taken as written (no Dagster templating).")
    base_dir: str = Field(default="data", description="Where stages are stored (path or fsspec URL).")
    model_providers: list[dict[str, Any]] | None = Field(default=None, description="Data Designer providers.")
    run_config: dict[str, Any] = Field(default_factory=dict, description="Data Designer RunConfig fields.")
    execution: ExecutionOverride = None
    max_concurrent_stages: MaxConcurrentStagesOverride = None
    prices: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="USD per million input and output tokens, by model or alias."
    )
    stall_timeout_s: float = Field(
        default=DEFAULT_STALL_TIMEOUT_S, gt=0, description="Fail a stage whose model calls wait this long unanswered."
    )
    automation: AutomationOverride = None
    owners: OwnersOverride = []  # noqa: RUF012 - pydantic copies mutable defaults
    tags: TagsOverride = {}  # noqa: RUF012 - pydantic copies mutable defaults

    @model_validator(mode="before")
    @classmethod
    def _known_attributes(cls, data: Any) -> Any:
        return _refuse_unknown_attributes(cls, data)

    @classmethod
    def get_model_cls(cls) -> type[BaseModel] | None:
        """Dagster's attributes model of the component, refusing an unknown attribute with a did-you-mean."""
        return _attributes_model(cls)

    def load_workflow(self, folder: Path):
        """The workflow this component declares, validated."""
        if (self.workflow_file is None) == (self.workflow is None):
            raise WorkflowDefinitionError(
                "set exactly one of 'workflow_file' and 'workflow'", field="attributes", file=str(folder / "defs.yaml")
            )
        if self.workflow_file is not None:
            workflow = load_workflow_yaml(folder / self.workflow_file)
        else:
            workflow = workflow_from_mapping(self.workflow, base_dir=folder, file=str(folder / "defs.yaml"))
        return self._with_asset_attributes(workflow, file=str(folder / "defs.yaml"))

    def _with_asset_attributes(self, workflow: Workflow, *, file: str) -> Workflow:
        """The workflow with this component's ``automation``, ``owners`` and ``tags`` as its defaults."""
        if self.automation is None and not self.owners and not self.tags:
            return workflow
        try:
            automation = automation_condition(self.automation)
        except ValueError as exc:
            raise WorkflowDefinitionError(str(exc), workflow=workflow.name, field="automation", file=file) from None
        try:
            return dataclasses.replace(
                workflow,
                automation_condition=automation if automation is not None else workflow.automation_condition,
                owners=list(dict.fromkeys([*self.owners, *workflow.owners])),
                tags={**self.tags, **workflow.tags},
            )
        except WorkflowDefinitionError as exc:
            raise exc.with_file(file) from None

    @functools.cached_property
    def resources(self) -> tuple[DataDesignerResource, StageParquetIOManager]:
        """This component's ``data_designer`` resource and ``dd_stage_io_manager``, made once from its attributes."""
        return workflow_resources(
            base_dir=self.base_dir,
            model_providers=self.model_providers,
            run_config=self.run_config,
            prices=self.prices,
            stall_timeout_s=self.stall_timeout_s,
        )

    def shared_resources(self, tree: dg.ComponentTree) -> tuple[DataDesignerResource, StageParquetIOManager]:
        """Each resource of this component as the first workflow component of ``tree`` configured alike holds it.

        Dagster merges the Definitions of a code location's components only when a resource key holds the very
        same object in both (``Definitions.merge`` compares with ``is``), so components configured alike share
        one component's objects. Components configured otherwise cannot live in one code location, and Dagster
        says so when definitions load ("different resources with same key").
        """
        try:
            components = tree.get_all_components(DataDesignerWorkflowComponent)
        except Exception:  # a tree of no defs folder (ComponentTree.for_test()); a sibling that does not load fails
            components = []  # when Dagster reaches it, with Dagster's own message
        held = [component.resources for component in components]
        data_designer, io_manager = self.resources
        data_designer = next((held_dd for held_dd, _ in held if held_dd == data_designer), data_designer)
        io_manager = next((held_io for _, held_io in held if held_io == io_manager), io_manager)
        return data_designer, io_manager

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        folder = Path(context.path)
        try:
            workflow = self.load_workflow(folder)
        except WorkflowDefinitionError as exc:  # the project's other components still load (assets/load_errors.py)
            failures: list[WorkflowLoadFailure] = []
            keep_or_raise(failures, WorkflowLoadFailure(file=exc.file or str(folder), error=exc, name=folder.name))
            return dg.Definitions(assets=[load_error_asset(failure) for failure in failures])
        data_designer, io_manager = self.shared_resources(context.component_tree)
        return build_workflow_definitions(
            workflow,
            data_designer=data_designer,
            io_manager=io_manager,
            execution=self.execution,
            max_concurrent_stages=self.max_concurrent_stages,
        )


def _refuse_unknown_attributes(model: type[BaseModel], data: Any) -> Any:
    """Unknown attribute names as one validation error each, at the attribute (Dagster shows its defs.yaml line).

    The error's input is the name, never the value: Dagster prints the input of attribute errors, and the value may
    be a provider's settings. A built-in error type, because Dagster rebuilds the errors by type name.
    """
    if not isinstance(data, dict):
        return data
    valid = pydantic_field_names(model)
    unknown = unknown_fields(data, valid)
    if unknown:
        raise ValidationError.from_exception_data(
            model.__name__,
            [
                {
                    "type": "value_error",
                    "loc": (name,),
                    "input": name,
                    "ctx": {"error": ValueError(_reason(name, valid))},
                }
                for name in unknown
            ],
        )
    return data


def _reason(name: str, valid: list[str]) -> str:
    return unknown_fields_reason("DataDesignerWorkflowComponent", [name], valid)


@functools.cache
def _attributes_model(component: type[dg.Resolvable]) -> type[BaseModel]:
    # Dagster validates defs.yaml attributes with a model it derives from the component (pydantic's extra="forbid":
    # "Extra inputs are not permitted", no suggestion); this subclass checks the names first.
    base = component.model()

    def known_attributes(cls: type, data: Any) -> Any:
        return _refuse_unknown_attributes(base, data)

    namespace = {
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "model_config": ConfigDict(hide_input_in_errors=True),  # attributes may hold a provider's settings
        "_known_attributes": model_validator(mode="before")(classmethod(known_attributes)),  # type: ignore[arg-type]
    }
    return type(base)(base.__name__, (base,), namespace)


def workflow_resources(
    *,
    base_dir: str = "data",
    model_providers: list[dict[str, Any]] | None = None,
    run_config: dict[str, Any] | None = None,
    prices: dict[str, dict[str, float]] | None = None,
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
) -> tuple[DataDesignerResource, StageParquetIOManager]:
    """The ``data_designer`` resource and the ``dd_stage_io_manager`` of a workflow component with these settings."""
    data_designer = DataDesignerResource(
        model_providers=model_providers,
        run_config=run_config or {},
        prices=prices or {},
        stall_timeout_s=stall_timeout_s,
    )
    return data_designer, StageParquetIOManager(base_dir=base_dir)
