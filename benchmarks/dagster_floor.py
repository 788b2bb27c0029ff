"""Dagster's own floor for the overhead benchmark: three chained assets that do nothing, in a file that imports
Data Designer as the benchmark workflows do.

dagster asset materialize -f benchmarks/dagster_floor.py --select '*'   # Dagster's CLI, instance and three steps
python benchmarks/dagster_floor.py                                      # the same imports, no Dagster run
"""

from __future__ import annotations

import os

os.environ.setdefault("NEMO_TELEMETRY_ENABLED", "false")

import data_designer.interface  # noqa: E402, F401 - imported as every benchmark workflow does

if __name__ != "__main__":
    import dagster as dg

    @dg.asset
    def people() -> int:
        return 1

    @dg.asset
    def enriched(people: int) -> int:
        return people + 1

    @dg.asset
    def export(enriched: int) -> int:
        return enriched + 1

    defs = dg.Definitions(assets=[people, enriched, export], executor=dg.in_process_executor)
