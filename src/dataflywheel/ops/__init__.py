"""Operators: base kinds, the registry, and the built-in catalogue."""

from dataflywheel.ops.base import (Filter, Generator, Mapper, OpConfig, OpContext, Operator, Scorer, Selection,
                                   Selector)
from dataflywheel.ops.registry import all_operators, get_operator, register

__all__ = ["Filter", "Generator", "Mapper", "OpConfig", "OpContext", "Operator", "Scorer", "Selection", "Selector",
           "all_operators", "get_operator", "register"]
