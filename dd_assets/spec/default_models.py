"""Data Designer's default models and providers, read without writing Data Designer's home folder.

dd_assets reads the user's ``model_configs.yaml`` and ``model_providers.yaml`` when they exist, and otherwise the
same built-in defaults Data Designer would have written, in memory (see :mod:`dd_assets.engine.dd_home`).
"""

from __future__ import annotations

from data_designer.config import default_model_settings as settings
from data_designer.config.models import ModelConfig, ModelProvider
from data_designer.config.utils.constants import MODEL_CONFIGS_FILE_PATH, MODEL_PROVIDERS_FILE_PATH


def default_model_configs() -> list[ModelConfig]:
    """The user's ``model_configs.yaml`` when it exists, else Data Designer's built-in default models."""
    if MODEL_CONFIGS_FILE_PATH.exists():
        return settings.get_default_model_configs()
    return settings.get_builtin_model_configs()


def default_model_providers() -> list[ModelProvider]:
    """The user's ``model_providers.yaml`` when it exists, else Data Designer's built-in default providers."""
    if MODEL_PROVIDERS_FILE_PATH.exists():
        return settings.get_default_providers()
    return settings.get_builtin_model_providers()
