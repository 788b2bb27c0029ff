"""The example project's ``dg`` defs folder: ``dg scaffold defs dd_assets.DataDesignerWorkflowComponent NAME`` in
this checkout writes ``NAME/defs.yaml`` here, and ``dd_assets.definitions`` loads every component it holds."""
