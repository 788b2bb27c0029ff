"""A stage's ``config`` in any accepted form, loaded as a fresh ``DataDesignerConfigBuilder``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from data_designer.config.config_builder import BuilderConfig, DataDesignerConfigBuilder
from data_designer.config.data_designer_config import DataDesignerConfig

from dd_assets.spec import strict_yaml
from dd_assets.spec.default_models import default_model_configs
from dd_assets.spec.stage_models import undeclared_model_aliases

StageConfig = DataDesignerConfigBuilder | DataDesignerConfig | Mapping[str, Any] | str | Path
"""A builder, a built config, a dict, or a path to a YAML/JSON file in Data Designer's ``write_config`` format."""


def load_stage_config(config: StageConfig) -> DataDesignerConfigBuilder:
    """Turn any accepted ``Stage.config`` form into a fresh ``DataDesignerConfigBuilder``.

    A column that uses one of Data Designer's default model aliases without defining it gets the default
    model config (the user's ``~/.data-designer/model_configs.yaml``, else Data Designer's built-in ones; nothing is
    written there).
    """
    return _with_default_models(_load_builder(config))


def _with_default_models(builder: DataDesignerConfigBuilder) -> DataDesignerConfigBuilder:
    missing = undeclared_model_aliases(builder)
    if missing:
        defaults = {model.alias: model for model in default_model_configs()}
        for alias in missing:
            if alias in defaults:
                builder.add_model_config(defaults[alias])
    return builder


def _load_builder(config: StageConfig) -> DataDesignerConfigBuilder:
    if isinstance(config, DataDesignerConfigBuilder):
        return DataDesignerConfigBuilder.from_config(BuilderConfig(data_designer=config.build()))
    if isinstance(config, DataDesignerConfig):
        return DataDesignerConfigBuilder.from_config(BuilderConfig(data_designer=config.model_copy(deep=True)))
    if isinstance(config, Mapping):
        return _builder_from_mapping(config)
    if isinstance(config, (str, Path)):
        path = Path(config)
        if path.suffix not in {".yaml", ".yml", ".json"}:
            raise ValueError(f"config file {str(path)!r} must end in .yaml, .yml or .json")
        if not path.is_file():
            raise ValueError(f"config file {str(path)!r} does not exist or is not a file")
        try:
            data = strict_yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"config file {str(path)!r} cannot be read: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"config file {str(path)!r} does not hold a mapping")
        return _builder_from_mapping(resolve_seed_path(data, path.parent))
    raise TypeError(
        "expected a DataDesignerConfigBuilder, DataDesignerConfig, dict or config file path, "
        f"got {type(config).__name__}"
    )


def _builder_from_mapping(config: Mapping[str, Any]) -> DataDesignerConfigBuilder:
    """``DataDesignerConfigBuilder.from_config`` of a mapping, keeping the int keys of judge score options.

    Data Designer loads a mapping through JSON, where every key is a string: a judge's options ``{4: ..., 0: ...}``
    came back as ``{"4": ..., "0": ...}``, and the published scores as strings where the same config built in Python
    publishes ints. Options written as ints get their int keys back (quoted keys stay strings, as written).
    """
    builder = DataDesignerConfigBuilder.from_config(dict(config))
    body = config.get("data_designer", config)
    for column in (body.get("columns") or []) if isinstance(body, Mapping) else []:
        if not isinstance(column, Mapping) or not isinstance(column.get("scores"), list):
            continue
        loaded = getattr(builder.get_column_config(column.get("name")), "scores", None) or []
        for score, written in zip(loaded, column["scores"], strict=False):
            options = written.get("options") if isinstance(written, Mapping) else None
            if isinstance(options, Mapping):
                ints = {str(k): k for k in options if isinstance(k, int) and not isinstance(k, bool)}
                score.options = {ints.get(key, key): text for key, text in score.options.items()}
    return builder


def resolve_seed_path(config: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Make a relative local seed path in a config mapping relative to ``base_dir`` (the config file's folder).

    Data Designer resolves it against the working directory instead, which breaks as soon as a project is
    run from another folder.
    """
    body = config.get("data_designer", config)
    source = ((body or {}).get("seed_config") or {}).get("source") or {}
    path = source.get("path")
    if source.get("seed_type") == "local" and isinstance(path, str) and not Path(path).is_absolute():
        source["path"] = str((base_dir / path).resolve())
    return config
