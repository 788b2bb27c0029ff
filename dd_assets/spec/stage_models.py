"""The model configs a stage uses: those its columns name, and nothing else.

A ``DataDesignerConfigBuilder`` built without model configs is filled with Data Designer's default models
from the machine's Data Designer home. Registering or fingerprinting those would make code versions depend
on the machine and make unrelated stages conflict, so dd_assets only ever looks at the configs of the
aliases a stage's columns use.
"""

from __future__ import annotations

from data_designer.config.config_builder import DataDesignerConfigBuilder
from data_designer.config.models import ModelConfig


def used_model_aliases(builder: DataDesignerConfigBuilder) -> list[str]:
    """Model aliases the stage's columns use, sorted."""
    return sorted({alias for column in builder.get_column_configs() for alias in column.get_model_aliases()})


def used_model_configs(builder: DataDesignerConfigBuilder) -> list[ModelConfig]:
    """The builder's model configs for the aliases its columns use (undeclared aliases are skipped)."""
    used = set(used_model_aliases(builder))
    return [config for config in builder.model_configs if config.alias in used]


def undeclared_model_aliases(builder: DataDesignerConfigBuilder) -> list[str]:
    """Aliases the columns use that no model config of the builder defines."""
    declared = {config.alias for config in builder.model_configs}
    return [alias for alias in used_model_aliases(builder) if alias not in declared]
