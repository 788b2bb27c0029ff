"""The ``dd-assets`` command: status, export, preview and estimate of the stages of a code location.

    dd-assets status   [-m MODULE | -f FILE]
    dd-assets export   WORKFLOW/STAGE OUT.{jsonl,csv,parquet} [--partition KEY] [--force] [-m MODULE | -f FILE]
    dd-assets preview  WORKFLOW/STAGE [-n 5] [-m MODULE | -f FILE]
    dd-assets estimate [WORKFLOW[/STAGE]] [-m MODULE | -f FILE]     (no target: every stage of every workflow)

The code location is found like ``dagster``'s: ``-m`` imports a module, ``-f`` runs a file; the first
``dg.Definitions`` in it (``defs`` preferred) is used. Without either, ``dd_assets.definitions`` (the example
project). Exit codes: 0 done, 1 the stage cannot be read or written (unpublished, unwritable path), 2 bad usage
(unknown workflow or stage, unknown suffix).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import datetime
import importlib
import io
import json
import logging
import math
import os
import runpy
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from dd_assets.assets.load_errors import LOAD_ERROR_METADATA
from dd_assets.assets.translator import IO_MANAGER_KEY, RESOURCE_KEY
from dd_assets.spec.definition_error import WorkflowDefinitionError
from dd_assets.spec.secrets import redact
from dd_assets.spec.workflow import Stage, Workflow
from dd_assets.storage.io_manager import StageParquetIOManager
from dd_assets.storage.records import StageStorageError

EXPORT_SUFFIXES = (".jsonl", ".csv", ".parquet")


class CommandError(Exception):
    """A message for the user and the exit code to leave with."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass
class CodeLocation:
    """The definitions of a module or file, the dd_assets workflows they were built from and each stage's spec."""

    defs: dg.Definitions
    workflows: dict[str, Workflow]
    specs: dict[tuple[str, str], dg.AssetSpec] = field(default_factory=dict)
    load_errors: list[str] = field(default_factory=list)  # workflow files that did not load (dd_assets/load_errors.py)

    @property
    def io_manager(self) -> StageParquetIOManager:
        return self.defs.resources[IO_MANAGER_KEY]

    def unknown_workflow(self, name: str) -> CommandError:
        """No workflow ``name``: the known ones, and the files that did not load (one of them may be it)."""
        known = ", ".join(sorted(self.workflows)) or "none"
        broken = f"; {len(self.load_errors)} workflow file(s) did not load, see above" if self.load_errors else ""
        return CommandError(f"unknown workflow {name!r} (workflows: {known}{broken})", code=2)

    def stage(self, ref: str) -> tuple[Workflow, Stage]:
        """``WORKFLOW/STAGE`` -> the workflow and stage; a clear error naming what exists otherwise."""
        workflow_name, _, stage_name = ref.partition("/")
        if not stage_name:
            raise CommandError(f"{ref!r}: give a stage as WORKFLOW/STAGE", code=2)
        workflow = self.workflows.get(workflow_name)
        if workflow is None:
            raise self.unknown_workflow(workflow_name)
        try:
            return workflow, workflow.stage(stage_name)
        except KeyError:
            known = ", ".join(s.name for s in workflow.stages)
            raise CommandError(
                f"workflow {workflow_name!r} has no stage {stage_name!r} (stages: {known})", code=2
            ) from None


def load_code_location(module: str | None, file: str | None) -> CodeLocation:
    """Import ``module`` or run ``file`` and take its ``dg.Definitions`` and the workflows built into it."""
    from dd_assets.assets.asset_factory import workflow_of

    logging.getLogger("dd_assets.assets.load_errors").setLevel(logging.ERROR)  # this command reports them itself

    if file:
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"-f {file}: no such file", code=2)
        sys.path.insert(0, str(path.resolve().parent))
        namespace = runpy.run_path(str(path))
    else:
        name = module or "dd_assets.definitions"
        sys.path.insert(0, str(Path.cwd()))
        try:
            namespace = vars(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            raise CommandError(f"-m {name}: {exc}", code=2) from None
    candidates = [namespace.get("defs")] + list(namespace.values())
    defs = next((value for value in candidates if isinstance(value, dg.Definitions)), None)
    if defs is None:
        raise CommandError(f"{file or module}: no dg.Definitions found", code=2)
    workflows: dict[str, Workflow] = {}
    specs: dict[tuple[str, str], dg.AssetSpec] = {}
    load_errors: list[str] = []
    for assets_def in defs.assets or []:
        workflow = workflow_of(assets_def) if isinstance(assets_def, dg.AssetsDefinition) else None
        if workflow is None:
            for spec in assets_def.specs if isinstance(assets_def, dg.AssetsDefinition) else []:
                error = spec.metadata.get(LOAD_ERROR_METADATA)
                if error is not None:
                    load_errors.append(str(getattr(error, "value", error)))
            continue
        workflows[workflow.name] = workflow
        for spec in assets_def.specs:  # the specs as the code location's translator made them
            stage = spec.metadata.get("dd_assets/stage")
            specs[(workflow.name, getattr(stage, "value", stage))] = spec
    if not workflows:
        if load_errors:
            raise CommandError("\n".join(load_errors), code=2)
        raise CommandError(f"{file or module}: its definitions hold no dd_assets workflow", code=2)
    return CodeLocation(defs=defs, workflows=workflows, specs=specs, load_errors=load_errors)


# --- status -----------------------------------------------------------------------------------
def status_rows(location: CodeLocation) -> list[dict[str, Any]]:
    """One row per stage (and per published partition): status, rows, last materialization, stale or not.

    Stale means what Dagster's UI calls Unsynced: the definition's code version is not the one published, or a
    direct upstream stage's current data version is not the one the output was built from."""
    io_manager = location.io_manager
    rows = []
    for workflow in location.workflows.values():
        for stage in workflow.topological_order():
            spec = location.specs.get((workflow.name, stage.name))
            code_version = spec.code_version if spec is not None else None
            partitions = (
                [None] if stage.partitions_def is None else io_manager.stored_partitions(workflow.name, stage.name)
            )
            if not partitions:
                partitions = [None]
            for partition in partitions:
                try:
                    record = io_manager.read_record(workflow.name, stage.name, partition)
                except StageStorageError as exc:
                    record = {"status": f"unreadable: {exc}"}
                name = f"{workflow.name}/{stage.name}" + (f"[{partition}]" if partition is not None else "")
                if record is None:
                    rows.append(
                        {"stage": name, "status": "never materialized", "rows": "", "materialized_at": "", "code": ""}
                    )
                    continue
                changed = _changed_upstreams(io_manager, workflow, stage, partition, record)
                if record.get("code_version") != code_version:
                    sync = "STALE (definition changed)"
                elif changed:
                    sync = f"STALE (upstream {', '.join(changed)} changed)"
                else:
                    sync = "current"
                rows.append(
                    {
                        "stage": name,
                        "status": str(record.get("status")),
                        "rows": str(record.get("output_rows", "")),
                        "materialized_at": str(record.get("materialized_at", ""))[:19],
                        "code": sync,
                    }
                )
    return rows


def _changed_upstreams(
    io_manager: StageParquetIOManager, workflow: Workflow, stage: Stage, partition: str | None, record: dict
) -> list[str]:
    """The upstream stages whose current output is not the version ``record`` was built from (external assets are
    Dagster's to tell). An upstream read as a run would read it: its same partition, else all of it."""
    from dd_assets.run.stage_inputs import data_version_of as _data_version_of

    changed = []
    names = {s.name for s in workflow.stages}
    for dep, used in (record.get("upstream") or {}).items():
        if dep not in names or not isinstance(used, dict):
            continue
        upstream = workflow.stage(dep)
        same_partition = partition is not None and upstream.partitions_def == stage.partitions_def
        try:
            dataset = io_manager.read_stage(
                workflow.name, dep, partition if same_partition else None, partitions_def=upstream.partitions_def
            )
            current = _data_version_of(dataset)
        except StageStorageError:
            current = None  # the upstream's output is gone or unreadable: not what this output was built from
        if current != used.get("data_version"):
            changed.append(dep)
    return changed


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


# --- export -----------------------------------------------------------------------------------
def export(location: CodeLocation, ref: str, out: str, partition: str | None, force: bool = False) -> int:
    """Write a stage's published output to ``out`` (by suffix); returns the row count.

    An existing ``out`` is replaced only with ``force``. Parquet keeps every value as stored; in ``.jsonl`` and
    ``.csv`` binary values are base64, NaN and infinities are JSON ``null`` (``.csv``: ``NaN``, ``inf``, ``-inf``),
    timestamps ISO 8601, and nested values (lists, structs, maps) JSON.
    """
    workflow, stage = location.stage(ref)
    target = Path(out)
    if target.suffix not in EXPORT_SUFFIXES:
        raise CommandError(f"{out}: the file must end in {', '.join(EXPORT_SUFFIXES)}", code=2)
    if not force and (target.exists() or target.is_symlink()):
        raise CommandError(f"{out} already exists; pass --force to overwrite it")
    if partition is not None and stage.partitions_def is None:
        raise CommandError(f"{ref} is not partitioned; leave out --partition", code=2)
    try:
        dataset = location.io_manager.read_stage(
            workflow.name, stage.name, partition, partitions_def=stage.partitions_def
        )
    except StageStorageError as exc:
        raise CommandError(str(exc)) from None
    table = dataset.to_arrow()
    tmp = target.with_name(f".{target.name}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        elif target.suffix == ".csv":
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(table.column_names)
                writer.writerows(_rows(table, _csv_cell))
        else:
            with open(tmp, "w", encoding="utf-8") as handle:
                names = table.column_names
                for row in _rows(table, _json_value):
                    handle.write(json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False, allow_nan=False))
                    handle.write("\n")
        tmp.replace(target)
    except OSError as exc:
        if tmp.parent.is_dir():
            tmp.unlink(missing_ok=True)
        raise CommandError(f"cannot write {out}: {exc.strerror or exc}") from None
    return table.num_rows


def _rows(table: Any, cell: Any) -> Any:
    """The rows of an Arrow table, each value through ``cell(value, arrow_type)``, a batch at a time."""
    types = [field.type for field in table.schema]
    for batch in table.to_batches(max_chunksize=10_000):
        columns = [column.to_pylist() for column in batch.columns]
        for row in zip(*columns, strict=True):
            yield [cell(value, kind) for value, kind in zip(row, types, strict=True)]


def _json_value(value: Any, kind: Any) -> Any:
    """One value of Arrow type ``kind`` as valid JSON: binary base64, NaN and infinities null, times ISO 8601."""
    import pyarrow as pa

    if value is None:
        return None
    if pa.types.is_dictionary(kind):
        return _json_value(value, kind.value_type)
    if pa.types.is_floating(kind):
        return value if math.isfinite(value) else None
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return base64.b64encode(value).decode("ascii")
    if pa.types.is_map(kind):
        if pa.types.is_string(kind.key_type) or pa.types.is_large_string(kind.key_type):
            return {k: _json_value(v, kind.item_type) for k, v in value}
        return [[_json_value(k, kind.key_type), _json_value(v, kind.item_type)] for k, v in value]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [_json_value(v, kind.value_type) for v in value]
    if pa.types.is_struct(kind):
        return {field.name: _json_value(value.get(field.name), field.type) for field in kind}
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, str | int | bool):
        return value
    return str(value)  # decimals, durations: their exact text


def _csv_cell(value: Any, kind: Any) -> Any:
    """One value as a CSV cell: null is empty, NaN and infinities ``NaN``/``inf``/``-inf``, nested values JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    value = _json_value(value, kind)
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    return value


# --- preview ---------------------------------------------------------------------------------
def preview(location: CodeLocation, ref: str, num_records: int) -> Any:
    """Data Designer's preview of one stage on its real upstream seed, as the stage would publish it (its output
    processors run and its ``output`` selected); nothing is published."""
    import tempfile

    from dd_assets.engine.stage_context import StageContext, running_stage
    from dd_assets.engine.stage_guard import StageGuard
    from dd_assets.run.generation_failures import generation_failure_reason
    from dd_assets.run.model_setup import model_setup_problem, models_used
    from dd_assets.run.seeds import build_seed, builder_with_seed

    workflow, stage = location.stage(ref)
    io_manager = location.io_manager
    where = f"workflow {workflow.name!r}, stage {stage.name!r}"
    if stage.on_success is not None:
        raise CommandError(f"{where}: its output is what on_success returns, which a preview cannot run", code=2)
    upstreams = {}
    for dep in stage.depends_on:
        if not isinstance(dep, str):
            raise CommandError(f"{ref} reads the external asset {dep.to_user_string()!r}, which dd-assets cannot load")
        try:
            upstreams[dep] = io_manager.read_stage(
                workflow.name, dep, partitions_def=workflow.stage(dep).partitions_def
            )
        except StageStorageError as exc:
            raise CommandError(f"{ref}: its upstream cannot be read: {exc}") from None
    resource = location.defs.resources[RESOURCE_KEY]
    with tempfile.TemporaryDirectory(prefix="dd-assets-preview-") as tmp:
        keys = {dep: dg.AssetKey([workflow.name, dep]) for dep in upstreams}
        try:
            seed = build_seed(stage, upstreams, keys, Path(tmp), where=where)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        builder = builder_with_seed(stage, seed, stage.selection_strategy)
        problem = model_setup_problem(builder, resource, stage.description)  # the check a run makes before generating
        if problem:
            raise CommandError(f"{where}: {problem}")
        data_designer = resource.get_data_designer()
        try:
            data_designer.register_stage_models(builder, owner=where)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        guard = StageGuard(stall_timeout_s=stage.stall_timeout_s or resource.stall_timeout_s, token_budget=None)
        guard.start()
        try:
            with running_stage(StageContext(label=f"{workflow.name}/{stage.name}", guard=guard)):
                return _published_preview(stage, data_designer, builder, num_records, Path(tmp))
        except CommandError:
            raise
        except Exception as exc:  # the provider's answer (which may echo a key) is redacted on the way out
            models = models_used(builder, resource)
            reason = guard.stop_reason or generation_failure_reason(exc, guard.failure_report())
            raise CommandError(f"{where}: preview failed: {reason}{f' ({models})' if models else ''}") from None
        finally:
            guard.stop_watching()


def _published_preview(stage: Stage, data_designer: Any, builder: Any, num_records: int, tmp: Path) -> Any:
    """Preview ``builder``, then run the stage's output processors on it and select its ``output``."""
    import pandas as pd

    from dd_assets.run.stage_output import output_processors_builder

    result = data_designer.preview(builder, num_records=num_records)
    dataset, processor_outputs = result.dataset, dict(result.processor_artifacts or {})
    if stage.output_processors:
        generated = tmp / "generated.parquet"
        dataset.to_parquet(generated)
        processed = data_designer.preview(
            output_processors_builder(stage, builder, str(generated)), num_records=len(dataset)
        )
        dataset = processed.dataset
        processor_outputs.update(processed.processor_artifacts or {})
    if stage.output == "final":
        return dataset
    name = stage.output.removeprefix("processor:")
    if name not in processor_outputs:
        raise CommandError(f"processor {name!r} produced no output in the preview")
    return pd.DataFrame(processor_outputs[name])


# --- redaction --------------------------------------------------------------------------------
class RedactingStream(io.TextIOBase):
    """A text stream that writes whole lines to ``stream`` with every secret value replaced by ``***``.

    ``secrets`` is read at each write, so values learned after the stream was installed (once the code location
    is loaded) are redacted too. Lines are held until their newline, so a value is never split across writes.
    """

    def __init__(self, stream: Any, secrets: list[str]):
        super().__init__()
        self._stream, self._secrets, self._pending = stream, secrets, ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            lines, _, self._pending = self._pending.rpartition("\n")
            self._stream.write(redact(lines + "\n", self._secrets))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(redact(self._pending, self._secrets))
            self._pending = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


@contextlib.contextmanager
def redacted_output(secrets: list[str]) -> Iterator[None]:
    """Within the block, everything written to stdout and stderr (prints, log lines, tracebacks) is redacted."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(saved[0], secrets), RedactingStream(saved[1], secrets)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = saved


def location_secrets(location: CodeLocation) -> list[str]:
    """The secret values a code location's resources hold (provider keys, named headers, storage secrets)."""
    values = []
    for key in (RESOURCE_KEY, IO_MANAGER_KEY):
        secret_values = getattr(location.defs.resources.get(key), "secret_values", None)
        if callable(secret_values):
            try:
                values += secret_values()
            except Exception:  # a resource that cannot tell (its config is set at launch) holds nothing to redact
                pass
    return values


# --- main -------------------------------------------------------------------------------------
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
            from dd_assets.tools.estimate import as_rows, estimate

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
