"""Operators by name (``family.name``)."""

from __future__ import annotations

import difflib
import importlib

from dataflywheel.ops.base import Operator

_REGISTRY: dict[str, type[Operator]] = {}


def register(cls: type[Operator]) -> type[Operator]:
    """Class decorator: make an operator available to recipes and ``flywheel ops``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"operator name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    from dataflywheel.ops.catalog import import_all

    import_all()


def load_plugins(modules: list[str]) -> None:
    """Import user modules whose operators register themselves (recipe key ``plugins``)."""
    for module in modules:
        importlib.import_module(module)


def get_operator(name: str) -> type[Operator]:
    """The operator class for ``name``; KeyError with suggestions if there is none."""
    from dataflywheel.ops.catalog import import_module_of

    # the built-in module first, also when a plugin registered the name: the clash is an error, not a swap
    if not import_module_of(name) and name not in _REGISTRY:
        _load_builtin()  # for the suggestions
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "; see `flywheel ops`"
        raise KeyError(f"unknown operator {name!r}{hint}")
    return _REGISTRY[name]


def all_operators() -> dict[str, type[Operator]]:
    _load_builtin()
    return dict(sorted(_REGISTRY.items()))
