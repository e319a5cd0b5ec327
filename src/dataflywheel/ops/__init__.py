"""Operators: base kinds, the registry, and the built-in catalogue."""

from dataflywheel.ops.base import (Candidate, Filter, Generator, GeneratorConfig, Mapper, NoveltyConfig, OpConfig,
                                   OpContext, Operator, PoolGenerator, PoolGeneratorConfig, PoolView, Rejected, Scorer,
                                   Selection, Selector, SourceGenerator)
from dataflywheel.ops.registry import all_operators, get_operator, register

__all__ = ["Candidate", "Filter", "Generator", "GeneratorConfig", "Mapper", "NoveltyConfig", "OpConfig", "OpContext",
           "Operator", "PoolGenerator", "PoolGeneratorConfig", "PoolView", "Rejected", "Scorer", "Selection",
           "Selector", "SourceGenerator", "all_operators", "get_operator", "register"]
