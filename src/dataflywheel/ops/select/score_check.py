"""Selectors and filters over scores: fail loudly on a score no record has, count records that lack it."""

from __future__ import annotations

import difflib

from pydantic import ValidationError

from dataflywheel.errors import FatalError as _Base  # no record is at fault: the run stops


class MissingScoreError(_Base, ValueError):
    """A selector or filter names a score that no record carries (a typo, or no scoring step before it)."""


def _default_score_names(cls) -> set[str]:
    """Score names an operator class writes with its default config."""
    names = set(getattr(cls, "produces", ()))
    if cls.kind == "scorer":
        try:
            names.add(cls(cls.Config()).score_name)
        except ValidationError:  # a config that needs fields has no default name
            pass
    if cls.name == "score.judge":
        try:
            from dataflywheel.ops.score.judge import RUBRICS

            names.update(f"judge.{rubric}" for rubric in RUBRICS)
        except ImportError:  # pragma: no cover
            pass
    return names


def producers(name: str) -> tuple[list[str], list[str]]:
    """(operators that write score ``name`` by default, operators whose ``score_name`` option can write it)."""
    from dataflywheel.ops.registry import all_operators

    exact, configurable = [], []
    for op_name, cls in all_operators().items():
        if name in _default_score_names(cls):
            exact.append(op_name)
        elif cls.kind == "scorer" and "score_name" in cls.Config.model_fields:
            configurable.append(op_name)
    return exact, configurable


def missing_score_message(op_name: str, name: str) -> str:
    from dataflywheel.ops.registry import all_operators

    exact, configurable = producers(name)
    known = sorted({n for cls in all_operators().values() for n in _default_score_names(cls)})
    close = [] if exact else difflib.get_close_matches(name, known, n=2)
    where = (f"scores named {name!r} come from {', '.join(exact)}: add it as an earlier step" if exact else
             f"no built-in operator writes {name!r} by default (scorers with a score_name option can: "
             f"{', '.join(configurable)})")
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"{op_name}: no record has the score {name!r}; {where}{hint}"


def check_scores(op, name: str, present: int, total: int) -> None:
    """Raise when no record has the score; count the records that lack it in ``op.counters``."""
    if total and not present:
        raise MissingScoreError(missing_score_message(op.name, name))
    if present < total:
        op.counters[f"records without score {name!r} (ranked last)"] += total - present
