"""Building a ``DataDesigner`` without writing Data Designer's home folder: the home-seeding switch.

``DataDesigner()`` writes ``~/.data-designer/model_configs.yaml`` and ``model_providers.yaml`` (NVIDIA and OpenAI
defaults) the first time it is built, whether or not a stage uses a model. dd_assets writes nothing outside the
project's folders: it reads those files when the user has them, and otherwise uses the same built-in defaults Data
Designer would have written, in memory (:mod:`dd_assets.spec.default_models`). ``DataDesigner.__init__`` calls the
seeding function unconditionally, so dd_assets routes that call through a switch that is off only while dd_assets
builds its own ``DataDesigner``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from data_designer.config import default_model_settings as settings

_SEED_HOME: contextvars.ContextVar[bool] = contextvars.ContextVar("dd_assets_seed_dd_home", default=True)


def _seed_unless_switched_off() -> None:
    if _SEED_HOME.get():
        settings.resolve_seed_default_model_settings()


def install_home_seeding_switch() -> None:
    """Route ``DataDesigner.__init__``'s home seeding through :func:`not_seeding_home` (idempotent).

    Private surface: ``data_designer.interface.data_designer.resolve_seed_default_model_settings``, the name
    ``DataDesigner.__init__`` calls, replaced for the whole process (marked so in
    :data:`dd_assets.engine.data_designer_surface.PRIVATE_SURFACES`). Outside :func:`not_seeding_home` the call seeds
    the home as before.
    """
    from data_designer.interface import data_designer as interface

    interface.resolve_seed_default_model_settings = _seed_unless_switched_off


@contextlib.contextmanager
def not_seeding_home() -> Iterator[None]:
    """Within the block, building a ``DataDesigner`` writes nothing into Data Designer's home."""
    install_home_seeding_switch()
    token = _SEED_HOME.set(False)
    try:
        yield
    finally:
        _SEED_HOME.reset(token)
