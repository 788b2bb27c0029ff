"""Dagster definitions: the translator, the asset factory, ``build_workflow_definitions`` and the Component."""
