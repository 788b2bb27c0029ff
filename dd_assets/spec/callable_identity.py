"""The code of the callables that shape a stage's output, as data a version can hash.

Data Designer identifies a custom column's generator by its name only (and its fingerprint by name, qualname and
module), so editing the body of a generator, a local validation function, a ``combine`` function or an ``on_success``
callback changed neither the code version nor the work key: the UI kept the stage synced and a rerun resumed old
batches into new code. Here a callable is identified by what it runs:

=============================  ==============================================================================
part                           what enters the identity
=============================  ==============================================================================
plain function                 its bytecode, constants (nested functions and lambdas recursively), names,
                               argument defaults; not line numbers (moving code changes nothing)
closure cells                  the values captured (``make_gen(factor)`` closures differ by ``factor``)
module-level helpers           functions of the same module it calls, recursively; constants it reads
decorator wrappers             the wrapped function (``__wrapped__``, as ``functools.wraps`` sets it)
``functools.partial``          the function and its bound arguments
callable object                its class's ``__call__`` and the instance's attributes
``@dd_assets.versioned("v")``  the version string alone, in place of all of the above
=============================  ==============================================================================

Captured values must be plain data (numbers, strings, lists, dicts, pydantic models, other callables). A callable
that captures anything else (a client, a DataFrame) or has no Python code cannot be identified: its stage then never
resumes, and only a ``versioned`` version lets the UI see an edit. Bytecode depends on the Python minor version, so a
Python upgrade marks stages with callables unsynced once.
"""

from __future__ import annotations

import functools
import hashlib
import types
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel

VERSION_ATTRIBUTE = "__dd_assets_version__"
F = TypeVar("F", bound=Callable[..., Any])


class Unidentifiable(Exception):
    """A callable whose code cannot be read as data; the message says which part."""


def versioned(version: str) -> Callable[[F], F]:
    """Decorator: identify a callable by ``version`` instead of its code (bump it when the behaviour changes).

    Works on custom column generators, validation functions, ``combine`` and ``on_success`` callables::

        @dd_assets.versioned("2")
        @dd.custom_column_generator(required_columns=["n"])
        def double(row): ...
    """
    if not isinstance(version, str) or not version:
        raise ValueError(f"versioned() takes a non-empty string, got {version!r}")

    def decorate(fn: F) -> F:
        setattr(fn, VERSION_ATTRIBUTE, version)
        return fn

    return decorate


def callable_identity(fn: Any) -> dict[str, Any]:
    """A JSON-ready identity of what ``fn`` runs; raises :class:`Unidentifiable` when it cannot be had."""
    return _Identifier().identity(fn)


def callables_in(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every callable held in a config (pydantic models, lists, dicts), with its field path."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from callables_in(getattr(value, name, None), f"{path}.{name}" if path else name)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from callables_in(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from callables_in(item, f"{path}[{key!r}]")
    elif callable(value) and not isinstance(value, (type, Enum)):
        yield path, value


class _Identifier:
    """One identity computation; remembers the functions on the current path to stop at recursion."""

    def __init__(self) -> None:
        self._active: set[int] = set()

    def identity(self, fn: Any) -> dict[str, Any]:
        version = getattr(fn, VERSION_ATTRIBUTE, None)
        if isinstance(version, str):
            return {"version": version}
        if isinstance(fn, functools.partial):
            return {
                "partial": self.identity(fn.func),
                "args": [self.value(a) for a in fn.args],
                "keywords": {k: self.value(v) for k, v in sorted(fn.keywords.items())},
            }
        if isinstance(fn, types.MethodType):
            return {"method": self.identity(fn.__func__), "self": self.value(fn.__self__)}
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is not None and isinstance(fn, types.FunctionType) and wrapped is not fn:
            return {"wrapper": self.function(fn), "wrapped": self.identity(wrapped)}
        if isinstance(fn, types.FunctionType):
            return self.function(fn)
        call = type(fn).__dict__.get("__call__") or getattr(type(fn), "__call__", None)  # noqa: B004
        if isinstance(call, types.FunctionType):
            state = getattr(fn, "__dict__", {})
            return {
                "class": f"{type(fn).__module__}:{type(fn).__qualname__}",
                "call": self.function(call),
                "state": {k: self.value(v) for k, v in sorted(state.items())},
            }
        raise Unidentifiable(f"{_name(fn)} has no Python code to read (a builtin or an extension)")

    def function(self, fn: types.FunctionType) -> dict[str, Any]:
        if id(fn) in self._active:
            return {"recursive": f"{fn.__module__}:{fn.__qualname__}"}
        self._active.add(id(fn))
        try:
            closure = {}
            for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
                try:
                    content = cell.cell_contents
                except ValueError:  # an empty cell: a name not yet bound when the function was made
                    content = None
                closure[name] = self.value(content, f"{_name(fn)} captures {name!r}")
            return {
                "function": f"{fn.__module__}:{fn.__qualname__}",
                "code": self.code(fn.__code__, fn),
                "defaults": [self.value(v, f"{_name(fn)}'s default") for v in fn.__defaults__ or ()],
                "kwdefaults": {
                    k: self.value(v, f"{_name(fn)}'s default {k!r}")
                    for k, v in sorted((fn.__kwdefaults__ or {}).items())
                },
                "closure": closure,
                "globals": self.globals_used(fn),
            }
        finally:
            self._active.discard(id(fn))

    def code(self, code: types.CodeType, fn: types.FunctionType) -> str:
        digest = hashlib.sha256(code.co_code)
        digest.update(repr(code.co_names).encode())
        digest.update(repr(code.co_varnames).encode())
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                digest.update(self.code(const, fn).encode())
            else:
                digest.update(repr(const).encode())
        return digest.hexdigest()[:24]

    def globals_used(self, fn: types.FunctionType) -> dict[str, Any]:
        """Functions of the same module and plain constants that ``fn`` (or code nested in it) reads by name."""
        found: dict[str, Any] = {}
        for name in sorted(_names(fn.__code__)):
            if name not in fn.__globals__:
                continue
            value = fn.__globals__[name]
            if isinstance(value, types.FunctionType) and value.__module__ == fn.__module__:
                found[name] = self.identity(value)
            elif _is_plain(value):
                found[name] = self.value(value)
        return found

    def value(self, value: Any, what: str = "a captured value") -> Any:
        if _is_plain(value):
            return _plain(value)
        if isinstance(value, Enum):
            return f"{type(value).__qualname__}.{value.name}"
        if isinstance(value, BaseModel):
            return {"model": type(value).__qualname__, "fields": self.value(value.model_dump(mode="python"))}
        if isinstance(value, (list, tuple)):
            return [self.value(v, what) for v in value]
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {k: self.value(v, what) for k, v in sorted(value.items())}
        if isinstance(value, (set, frozenset)) and all(_is_plain(v) for v in value):
            return sorted(map(repr, value))
        if isinstance(value, types.ModuleType):
            return {"module": value.__name__}
        if isinstance(value, type):
            return {"class": f"{value.__module__}:{value.__qualname__}"}
        if callable(value):
            return self.identity(value)
        raise Unidentifiable(f"{what}: a {type(value).__name__}, which is not plain data")


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, bytes):
        return value.hex()
    return value


def _name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__qualname__)}"
