"""The ``dd-assets`` command: status, export, preview and estimate of the stages of a code location.

    dd-assets status   [-m MODULE | -f FILE]
    dd-assets export   WORKFLOW/STAGE OUT.{jsonl,csv,parquet} [--partition KEY] [--force] [-m MODULE | -f FILE]
    dd-assets preview  WORKFLOW/STAGE [-n 5] [-m MODULE | -f FILE]
    dd-assets estimate [WORKFLOW[/STAGE]] [-m MODULE | -f FILE]     (no target: every stage of every workflow)

The code location is found like ``dagster``'s (see :mod:`dd_assets.tools.code_location`). Exit codes: 0 done,
1 the stage cannot be read or written (unpublished, unwritable path), 2 bad usage (unknown workflow or stage,
unknown suffix).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from dd_assets.assets.translator import RESOURCE_KEY
from dd_assets.spec.definition_error import WorkflowDefinitionError
from dd_assets.tools.code_location import load_code_location
from dd_assets.tools.command_error import CommandError
from dd_assets.tools.estimate import as_rows, estimate
from dd_assets.tools.export import export
from dd_assets.tools.preview import preview
from dd_assets.tools.redaction import location_secrets, redacted_output
from dd_assets.tools.status import status_rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dd-assets", description="Status, export, preview and estimate of dd_assets stages."
    )
    location = argparse.ArgumentParser(add_help=False)
    where = location.add_mutually_exclusive_group()
    where.add_argument("-m", "--module-name", dest="module", help="import this module for its dg.Definitions")
    where.add_argument("-f", "--python-file", dest="file", help="run this file for its dg.Definitions")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", parents=[location], help="every stage: status, rows, last run, stale or not")
    export_cmd = commands.add_parser("export", parents=[location], help="write a stage's output to a file")
    export_cmd.add_argument("stage", metavar="WORKFLOW/STAGE")
    export_cmd.add_argument("out", metavar="OUT", help="a .jsonl, .csv or .parquet path")
    export_cmd.add_argument("--partition", default=None, help="one partition of a partitioned stage")
    export_cmd.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    preview_cmd = commands.add_parser("preview", parents=[location], help="preview a stage on its real upstream")
    preview_cmd.add_argument("stage", metavar="WORKFLOW/STAGE")
    preview_cmd.add_argument("-n", "--num-records", type=int, default=5)
    estimate_cmd = commands.add_parser(
        "estimate", parents=[location], help="records, LLM columns, model requests and cost range, no model call"
    )
    estimate_cmd.add_argument(
        "target", metavar="WORKFLOW[/STAGE]", nargs="?", default=None, help="default: every stage of every workflow"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dd-assets`` console script."""
    args = _parser().parse_args(argv)
    secrets: list[str] = []
    with redacted_output(secrets):
        return _run(args, secrets)


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


def _run(args: argparse.Namespace, secrets: list[str]) -> int:
    try:
        location = load_code_location(args.module, args.file)
        secrets += location_secrets(location)
        for error in location.load_errors:  # the other workflows loaded; this file's did not
            print(f"dd-assets: not loaded: {error}", file=sys.stderr)
        if args.command == "status":
            _print_table(status_rows(location))
            if location.load_errors:
                return 1
        elif args.command == "estimate":
            workflow_name, _, stage_name = (args.target or "").partition("/")
            if stage_name:
                workflows = [location.stage(args.target)[0]]
            elif not workflow_name:
                workflows = list(location.workflows.values())  # no target: every stage of every workflow
            elif workflow_name in location.workflows:
                workflows = [location.workflows[workflow_name]]
            else:
                raise location.unknown_workflow(workflow_name)
            resource = location.defs.resources[RESOURCE_KEY]
            prices = resource.prices
            run_config = resource.data_designer_run_config()  # its correction and restart limits bound the tokens
            planned = [item for wf in workflows for item in estimate(wf, stage_name or None, prices, run_config)]
            _print_table(as_rows(planned))
            if not prices:
                print("\n(no prices set: DataDesignerResource(prices=...) adds a cost range)")
        elif args.command == "export":
            rows = export(location, args.stage, args.out, args.partition, force=args.force)
            print(f"wrote {rows} rows of {args.stage} to {args.out}")
        else:
            if args.num_records < 1:
                raise CommandError("-n must be at least 1", code=2)
            frame = preview(location, args.stage, args.num_records)
            import pandas as pd

            with pd.option_context("display.max_columns", None, "display.width", 160, "display.max_colwidth", 60):
                print(frame.to_string(index=False))
            print(f"\npreview of {args.stage}: {len(frame)} records, nothing published")
    except CommandError as exc:
        print(f"dd-assets: {exc}", file=sys.stderr)
        return exc.code
    except WorkflowDefinitionError as exc:  # a mistake in the definitions: its message names where
        print(f"dd-assets: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # not a traceback: the message, redacted like every output of the command
        print(f"dd-assets: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def entry_point() -> None:
    """The console script: :func:`main`, then leave without interpreter teardown.

    Everything is written and closed by then. Native threads started by imported libraries can abort the process
    while Python finalizes ("terminate called without an active exception", exit -6), turning a finished command's
    exit code into a crash; ``os._exit`` keeps the code the command chose.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry_point()
