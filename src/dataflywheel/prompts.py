"""Prompt templates rendered by Jinja2's sandbox: ``{{ name }}`` placeholders, literal braces (JSON examples)
left alone, and values inserted as plain text, so record text can never inject template syntax."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=1)
def _environment():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@functools.lru_cache(maxsize=256)
def _compile(source: str):
    return _environment().from_string(source)


def render(template: str, **values) -> str:
    """``template`` with its ``{{ name }}`` placeholders filled; a placeholder without a value raises."""
    return _compile(template).render(**values)


@functools.lru_cache(maxsize=256)
def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def render_file(path: str | Path, **values) -> str:
    """The template file at ``path`` (read once per process) rendered with ``values``."""
    return render(_read(str(path)), **values)
