"""Model-fault table for docs/reliability.md: each fault at several rates, against the local test server.

    python benchmarks/fault_table.py

For each fault and rate, the stage is first materialized cleanly, then again with the fault injected into that
share of model requests (every k-th request). Prints a markdown table: outcome, records kept, and whether the
last good output survived (data lost must be none).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NEMO_TELEMETRY_ENABLED", "false")
os.environ.setdefault("DATA_DESIGNER_HOME", tempfile.mkdtemp(prefix="dd_home_"))
os.environ.setdefault("DD_ASSETS_TEST_API_KEY", "sk-fault-table")  # the providers name their key by variable
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg  # noqa: E402

from dd_assets_tests.faults import FAULTS, ROWS, run_fault  # noqa: E402
from dd_assets_tests.llm_server import FakeLLMServer  # noqa: E402

RATES = [0.1, 0.25, 0.5, 1.0]


def main() -> None:
    server = FakeLLMServer().start()
    print("| fault | rate | outcome | records kept | data lost |")
    print("|---|---|---|---|---|")
    try:
        with tempfile.TemporaryDirectory() as tmp, dg.DagsterInstance.ephemeral() as instance:
            for fault in FAULTS:
                # Data Designer treats 429 as back-pressure and keeps backing off, so a provider that answers
                # every request with 429 stalls the stage rather than failing it: not run at 100%.
                for rate in [r for r in RATES if not (fault.startswith("429") and r == 1.0)]:
                    out = run_fault(server, Path(tmp) / f"{fault}-{rate}".replace(" ", "_"), instance, fault, rate)
                    if out.success:
                        outcome, kept = "stage succeeded", f"{out.rows_kept}/{ROWS} ({out.rows_kept / ROWS:.0%})"
                    else:
                        named = all(x in out.message for x in ("stage 'write'", "fault-model", "fault_llm"))
                        outcome = "stage failed; the message names the stage, alias, model and provider"
                        outcome = outcome if named else f"stage failed: {out.message[:120]}"
                        kept = "previous output kept"
                    lost = "none" if out.previous_intact else "**LOST**"
                    print(f"| {fault} | {rate:.0%} | {outcome} | {kept} | {lost} |", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
