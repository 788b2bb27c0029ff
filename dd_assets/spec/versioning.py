"""Code versions and data versions of stage assets.

``code_version`` hashes the stage spec alone, so editing one stage marks exactly that
stage unsynced in the Dagster UI. What it includes and excludes:

==========================  ========  =====================================================
field                       included  why
==========================  ========  =====================================================
config fingerprint          yes       Data Designer's own ``DataDesignerConfig.fingerprint()``,
                                      with only the model configs the columns use (not the
                                      default models of the machine's Data Designer home)
seed source path            no        machine specific; upstream seeds change data, not code
seed sampling / selection   yes       change which rows are drawn
num_records                 yes       changes the output size
depends_on, combine         yes       change what the stage reads
output_processors, output   yes       change what is handed downstream
allow_empty                 yes       changes success semantics
on_success_version          yes       the user's version of the callback (then its code is not read)
callables                   code      custom column generators, validation functions, a ``combine`` or
                                      ``on_success`` callable: what they run (``callable_identity.py``),
                                      or a ``dd_assets.versioned`` version
Data Designer version       yes       a new engine may generate differently
partitions                  yes       the partition count or definition decides each share
                                      (only present when the stage is partitioned)
description                 no        documentation only
==========================  ========  =====================================================

``data_version`` hashes the parquet bytes handed downstream.

The *work key* (:func:`generation_work_key`) is narrower: it names the work directory whose finished
batches a rerun resumes, so it hashes what decides the generated rows and nothing else:

==========================  ========  =====================================================
input                       included  why
==========================  ========  =====================================================
config fingerprint          yes       as above
config callables            code      generators and validation functions of the config; one that cannot
                                      be identified makes the work unrepeatable (never resumed)
seed content                yes       bytes of the seed actually read: an upstream's data
                                      version, a combined seed's hash, a local seed file's
                                      content (an edited file never resumes into old rows), a
                                      seed directory's files, an in-memory DataFrame's values; a
                                      Hugging Face seed by its path (its content is remote)
num_records (resolved)      yes       the target Data Designer resumes towards
sampling / selection        yes       which seed rows are drawn (a partition's block included)
partition                   yes       the partition key, index and count
run settings                yes       ``RunConfig`` (``buffer_size`` sets batch boundaries)
Data Designer version       yes       a new engine may generate differently
output / processors         no        applied after generation: changing them keeps batches
on_success, allow_empty     no        likewise
==========================  ========  =====================================================
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import dagster as dg
from data_designer.config.config_builder import DataDesignerConfigBuilder
from data_designer.config.version import get_library_version

from dd_assets.spec.callable_identity import Unidentifiable, callable_identity, callables_in
from dd_assets.spec.seed_files import local_seed_files
from dd_assets.spec.stage_models import used_model_configs
from dd_assets.spec.workflow import Stage

CODE_VERSION_SCHEME = 2
WORK_KEY_SCHEME = 1


def _callable_name(fn: Any) -> str | None:
    if fn is None or isinstance(fn, str):
        return fn
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def config_fingerprint(builder: DataDesignerConfigBuilder) -> tuple[str, dict[str, Any] | None]:
    """Data Designer's fingerprint of the config with the seed source left out, and the seed's strategies.

    Only the model configs the columns use count: a builder made without model configs holds Data
    Designer's defaults from the machine's home, which must not change a stage's version.
    """
    config = builder.build().model_copy(update={"model_configs": used_model_configs(builder)})
    seed = config.seed_config
    seed_payload = None
    if seed is not None:
        seed_payload = {
            "seed_type": getattr(seed.source, "seed_type", type(seed.source).__name__),
            "sampling_strategy": str(getattr(seed.sampling_strategy, "value", seed.sampling_strategy)),
            "selection_strategy": seed.selection_strategy.model_dump(mode="json") if seed.selection_strategy else None,
        }
        config = config.model_copy(update={"seed_config": None})
    return str(config.fingerprint()["config_hash"]), seed_payload


def config_callables(stage: Stage) -> dict[str, Any]:
    """The callables held in the stage's config (custom column generators, validation functions), by field path."""
    return dict(callables_in(stage.builder.build(), "config"))


def stage_callables(stage: Stage) -> dict[str, Any]:
    """Every callable that shapes the stage's output, by field path (``on_success`` only without its version)."""
    found = config_callables(stage)
    found.update(callables_in(list(stage.output_processors), "output_processors"))
    if callable(stage.combine):
        found["combine"] = stage.combine
    if callable(stage.on_success) and stage.on_success_version is None:
        found["on_success"] = stage.on_success
    return found


def identify_callables(callables: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``(identities, problems)``: each callable's identity by path, and why the others cannot be identified."""
    identities: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for path, fn in callables.items():
        try:
            identities[path] = callable_identity(fn)
        except Unidentifiable as exc:
            problems[path] = str(exc)
            identities[path] = {"unidentifiable": f"{getattr(fn, '__module__', '?')}:{_callable_name(fn)}"}
    return identities, problems


def stage_spec_payload(stage: Stage) -> dict[str, Any]:
    """Everything that defines what the stage generates, as JSON-ready data (see the module table)."""
    fingerprint, own_seed = config_fingerprint(stage.builder)
    callables, _ = identify_callables(stage_callables(stage))
    return {
        "scheme": CODE_VERSION_SCHEME,
        "config_fingerprint": fingerprint,
        "own_seed": own_seed,
        "depends_on": [d if isinstance(d, str) else d.to_user_string() for d in stage.depends_on],
        "combine": _callable_name(stage.combine),
        "num_records": stage.num_records,
        "sampling_strategy": stage.sampling_strategy.value,
        "selection_strategy": stage.selection_strategy.model_dump(mode="json") if stage.selection_strategy else None,
        "output_processors": [p.model_dump(mode="json") for p in stage.output_processors],
        "output": stage.output,
        "allow_empty": stage.allow_empty,
        "on_success": _callable_name(stage.on_success),
        "on_success_version": stage.on_success_version,
        "data_designer_version": get_library_version(),
        **({"partitions": partitions_fingerprint(stage.partitions)} if stage.partitions is not None else {}),
        **({"callables": callables} if callables else {}),
    }


def partitions_fingerprint(partitions: Any) -> Any:
    """What identifies a stage's partitioning in its code version: the count, or the definition's class and keys.

    Time-window and dynamic definitions grow: only their class and serialised settings count, not today's keys.
    """
    if isinstance(partitions, int):
        return partitions
    if isinstance(partitions, dg.StaticPartitionsDefinition):
        return {"static": list(partitions.get_partition_keys())}
    return {"class": type(partitions).__name__, "repr": str(partitions)}


def hash_json(payload: Any) -> str:
    """Stable sha256 of a JSON-serializable value."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def stage_code_version(stage: Stage) -> str:
    """The Dagster ``code_version`` of a stage asset: a short hash of its spec alone."""
    return hash_json(stage_spec_payload(stage))[:16]


def parquet_data_version(files: Iterable[Path]) -> str:
    """Hash of the parquet bytes of a stage output, in file order (local paths or UPaths)."""
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def generation_inputs(
    stage: Stage,
    *,
    seed_fingerprint: str | None,
    num_records: int,
    run_settings: dict[str, Any],
    partition: dict[str, Any] | None = None,
    selection_strategy: Any = None,
) -> dict[str, Any]:
    """What decides the rows a stage generates (see the work key table in the module docstring).

    ``partition`` (key, index, count) and the partition's ``selection_strategy`` are given for a partition run.
    """
    fingerprint, own_seed = config_fingerprint(stage.builder)
    selection = selection_strategy or stage.selection_strategy
    inputs = {
        "scheme": WORK_KEY_SCHEME,
        "config_fingerprint": fingerprint,
        "own_seed": own_seed,
        "seed_fingerprint": seed_fingerprint,
        "num_records": num_records,
        "sampling_strategy": stage.sampling_strategy.value,
        "selection_strategy": selection.model_dump(mode="json") if selection else None,
        "run_settings": run_settings,
        "data_designer_version": get_library_version(),
    }
    if partition is not None:
        inputs["partition"] = partition
    callables, problems = identify_callables(config_callables(stage))
    if callables:
        inputs["callables"] = callables
    if problems:  # nothing proves a rerun would generate alike: never resume this work
        inputs["unrepeatable"] = {"why": problems, "nonce": uuid.uuid4().hex}
    return inputs


def generation_work_key(inputs: dict[str, Any]) -> str:
    """The work directory name for :func:`generation_inputs`: a rerun of the same inputs resumes there."""
    return hash_json(inputs)[:16]


def files_fingerprint(files: Iterable[Path]) -> str:
    """Hash of the names' order and bytes of local files (a root stage's own seed files)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def own_seed_fingerprint(builder: DataDesignerConfigBuilder) -> str | None:
    """The content of a root stage's own seed (see the work key table); ``None`` without one.

    Raises ``FileNotFoundError`` naming a local seed file that does not exist. A DataFrame whose values cannot be
    hashed gives a fresh value on every call, so such work never resumes.
    """
    seed = builder.get_seed_config()
    source = getattr(seed, "source", None)
    if source is None:
        return None
    kind = getattr(source, "seed_type", type(source).__name__)
    if kind == "local":
        files = local_seed_files(builder) or []
        missing = [str(f) for f in files if not f.is_file()]
        if missing or not files:
            raise FileNotFoundError(", ".join(missing) or str(source.path))
        return files_fingerprint(files)
    if kind == "df":
        return _dataframe_fingerprint(source.df)
    path = getattr(source, "path", None)
    if kind in ("directory", "file_contents", "agent_rollout") and path:
        root = Path(path)
        pattern = getattr(source, "file_pattern", None) or "*"
        found = root.rglob(pattern) if getattr(source, "recursive", True) else root.glob(pattern)
        files = sorted(f for f in found if f.is_file())
        digest = hashlib.sha256(json.dumps([kind, pattern, [str(f.relative_to(root)) for f in files]]).encode())
        digest.update(files_fingerprint(files).encode())
        return digest.hexdigest()[:16]
    return hash_json(source.model_dump(mode="json", exclude={"token"}))[:16]


def _dataframe_fingerprint(df: Any) -> str:
    import pandas as pd

    digest = hashlib.sha256(json.dumps([list(map(str, df.columns)), list(map(str, df.dtypes))]).encode())
    try:
        digest.update(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
    except TypeError:  # unhashable cells (lists, dicts): hash their JSON text instead
        try:
            digest.update(df.to_json(orient="split", date_format="iso", default_handler=str).encode())
        except Exception:  # noqa: BLE001 - nothing proves two runs read the same rows: never resume
            return f"unrepeatable-{uuid.uuid4().hex}"
    return digest.hexdigest()[:16]
