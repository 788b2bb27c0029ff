"""Refusing unknown fields, with a did-you-mean: a typo must never fall back silently to a default.

``StageParquetIOManager(base_dri="x")`` used to build with ``base_dir="data"`` and write there. Every dd_assets
class a user configures by keyword (the resource, the IO manager, ``Stage``, ``Workflow``, the Component) checks
the names it is given against its fields before anything else.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T", bound=type)


class UnknownFieldError(ValueError):
    """A keyword that is not a field of the class it was given to."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or ``""`` when none is close."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unknown_fields(given: Iterable[str], valid: Iterable[str]) -> list[str]:
    """The names in ``given`` that are not in ``valid``."""
    valid = set(valid)
    return [name for name in given if name not in valid]


def unknown_fields_reason(what: str, unknown: list[str], valid: Iterable[str]) -> str:
    """``"unknown <what> field 'x' (did you mean 'y'?)"`` for each unknown name, and the valid ones."""
    valid = list(valid)
    problems = "; ".join(f"unknown {what} field {name!r}{did_you_mean(name, valid)}" for name in unknown)
    return f"{problems} (its fields: {', '.join(valid)})"


def pydantic_field_names(cls: type) -> list[str]:
    """The names a pydantic model (a Dagster resource or IO manager) takes as keywords: aliases where set."""
    return [field.alias or name for name, field in cls.model_fields.items()]


def refuse_unknown_fields(cls: type, given: Iterable[str]) -> None:
    """Raise :class:`UnknownFieldError` when ``given`` holds a name that is not a field of the pydantic ``cls``."""
    valid = pydantic_field_names(cls)
    unknown = unknown_fields(given, valid)
    if unknown:
        raise UnknownFieldError(f"{cls.__name__}: {unknown_fields_reason(cls.__name__, unknown, valid)}")


def checked_dataclass_init(make_error: Callable[[str, str | None, dict[str, Any]], Exception]) -> Callable[[T], T]:
    """A decorator for a dataclass: wrong keywords or arguments raise ``make_error(reason, field, kwargs)``.

    Unknown keywords get a did-you-mean; a missing required field or too many positional arguments are named
    (Python would raise a bare ``TypeError``).
    """

    def decorate(cls: T) -> T:
        init = cls.__init__
        signature = inspect.signature(init)
        valid = [name for name in signature.parameters if name != "self"]

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            unknown = unknown_fields(kwargs, valid)
            if unknown:
                raise make_error(unknown_fields_reason(cls.__name__, unknown, valid), unknown[0], kwargs)
            try:
                signature.bind(self, *args, **kwargs)
            except TypeError as exc:
                raise make_error(f"{cls.__name__}(): {exc}", None, kwargs) from None
            init(self, *args, **kwargs)

        cls.__init__ = __init__  # type: ignore[method-assign]
        return cls

    return decorate
