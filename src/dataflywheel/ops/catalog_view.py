"""Text for ``flywheel ops``: the catalogue and one operator in full."""

from __future__ import annotations

import inspect

from dataflywheel.ops.registry import all_operators, get_operator


def _fields(cls) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, info in cls.Config.model_fields.items():
        annotation = getattr(info.annotation, "__name__", None) or str(info.annotation).replace("typing.", "")
        default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
        rows.append((name, annotation, default, info.description or ""))
    return rows


def operator_rows() -> list[tuple[str, str, str, str]]:
    """(name, kind, one-line doc, config fields) for every operator."""
    return [(name, cls.kind, cls.summary(), ", ".join(f"{f}={d}" for f, _, d, _ in _fields(cls)))
            for name, cls in all_operators().items()]


def describe_operator(name: str) -> str:
    """Everything about one operator: doc, kind, module and every config field."""
    cls = get_operator(name)
    lines = [f"{name}  ({cls.kind})", "", inspect.cleandoc(cls.__doc__ or ""), "", f"module: {cls.__module__}", "",
             "config:"]
    for field, annotation, default, doc in _fields(cls) or [("(none)", "", "", "")]:
        lines.append(f"  {field}: {annotation} = {default}" + (f"\n      {doc}" if doc else ""))
    return "\n".join(lines)
