"""Each stage's columns before its first run, as ``dagster/column_schema``: name, type where known, and how made.

The columns come from the workflow's column flow (:mod:`dd_assets.spec.column_flow`), the same computation that
validation checks templates against. Data Designer's own output order can differ from run to run; the materialized
schema shows the real one. Where the columns cannot be known without running (an external upstream, a callable
``combine``, ``on_success``), the stage gets no column schema before its first run. A materialization then records the
real Arrow types with the same descriptions (:func:`dd_assets.run.metadata.column_schema`).
"""

from __future__ import annotations

import dagster as dg

from dd_assets.spec.workflow import Stage, Workflow


def stage_column_schema(workflow: Workflow, stage: Stage) -> dg.TableSchema | None:
    """The ``dagster/column_schema`` of a stage before any run, or ``None`` when it cannot be known."""
    columns = workflow.column_flow[stage.name].output
    if columns is None:
        return None
    return dg.TableSchema(columns=[dg.TableColumn(c.name, c.type, description=c.description) for c in columns])
