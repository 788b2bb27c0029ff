"""The example code location under its stable name: ``dagster dev -m dd_assets.definitions`` (see examples/)."""

from dd_assets.examples.definitions import defs

__all__ = ["defs"]
