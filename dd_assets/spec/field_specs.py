"""One definition per field of :class:`~dd_assets.spec.workflow.Stage` and ``Workflow``: its YAML form, its allowed
values and what a wrong value is told.

The classes declare each field with :func:`spec_field`. The YAML model and the JSON Schema (and so the Component's
inline ``workflow``) are generated from these definitions, and the Python checks of plain values read them: a value
of a field with ``what`` must pass the field's type and range (its YAML type, or its ``python`` type where the
Python value is an object YAML cannot write), in Python as in YAML.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

SPEC_KEY = "dd_assets.spec"  # where a dataclass field's metadata holds its FieldSpec


@dataclass(frozen=True)
class Bounds:
    """The allowed range of a numeric field: checked in Python, published as JSON Schema for YAML."""

    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return (
            (self.minimum is None or value >= self.minimum)
            and (self.exclusive_minimum is None or value > self.exclusive_minimum)
            and (self.maximum is None or value <= self.maximum)
        )

    def json_schema(self) -> dict[str, float]:
        """The JSON Schema keywords of the range."""
        keywords = {"minimum": self.minimum, "exclusiveMinimum": self.exclusive_minimum, "maximum": self.maximum}
        return {key: value for key, value in keywords.items() if value is not None}

    def constraints(self) -> dict[str, float]:
        """The range as pydantic ``Field`` constraints."""
        keywords = {"ge": self.minimum, "gt": self.exclusive_minimum, "le": self.maximum}
        return {key: value for key, value in keywords.items() if value is not None}


@dataclass(frozen=True)
class FieldSpec:
    """How one field is written in YAML (and in the Component's workflow), its range, and its plain-value check.

    The field's name and default are the dataclass field's.
    """

    yaml: Any  # the annotation of the YAML value
    description: str | None = None
    convert: Callable[[Any, Path], Any] | None = None  # YAML value -> Python argument; a ValueError refuses it
    key: str | None = None  # the YAML key, where it is not the Python name
    schema: dict[str, Any] = field(default_factory=dict)  # more JSON Schema keywords
    bounds: Bounds | None = None
    what: str | None = None  # "must be <what>, got <value>" when a Python value fails the field's type and range
    python: Any = None  # the type of the Python value where it is not the YAML one (callables, Data Designer objects)

    def value_type(self, *, optional: bool = False) -> Any:
        """The YAML type with the range on its value; ``None`` allowed where the type allows it or ``optional``."""
        options = get_args(self.yaml) if get_origin(self.yaml) in (Union, types.UnionType) else (self.yaml,)
        values = [option for option in options if option is not type(None)]
        value_type: Any = Union[tuple(values)] if len(values) > 1 else values[0]  # noqa: UP007 - built at run time
        if self.bounds is not None:
            value_type = Annotated[value_type, Field(**self.bounds.constraints())]
        return value_type | None if optional or len(values) < len(options) else value_type

    @functools.cached_property
    def _allowed(self) -> TypeAdapter:
        if self.python is not None:
            return TypeAdapter(self.python, config=ConfigDict(arbitrary_types_allowed=True))
        return TypeAdapter(self.value_type())

    def problem(self, value: object) -> str | None:
        """``"must be <what>, got <value>"`` when a Python value is not allowed (checked against ``python`` when set,
        else the YAML type and range), else ``None``."""
        if self.what is None:
            return None
        try:
            self._allowed.validate_python(value, strict=True)
        except ValidationError:
            return f"must be {self.what}, got {value!r}"
        return None


def spec_field(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, **spec: Any) -> Any:
    """A dataclass field (``default`` or ``default_factory``) defined by ``FieldSpec(**spec)``."""
    return field(default=default, default_factory=default_factory, metadata={SPEC_KEY: FieldSpec(**spec)})


def field_specs(cls: type) -> dict[str, FieldSpec]:
    """The definitions of ``cls``'s fields that have one, by Python name."""
    return {f.name: f.metadata[SPEC_KEY] for f in dataclasses.fields(cls) if SPEC_KEY in f.metadata}


def check_plain_values(owner: object, fail: Callable[[str, str], None]) -> None:
    """``fail(message, field)`` for the first plain value of a Stage or Workflow its definition does not allow."""
    for name, spec in field_specs(type(owner)).items():
        problem = spec.problem(getattr(owner, name))
        if problem:
            fail(problem, name)
