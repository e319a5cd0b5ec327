"""Recipes, the run's books, and the engines that execute them.

The names below are imported on first use, so a process that needs one module of the package (the output
writer, a worker) does not import the engines."""

import importlib

_WHERE = {"LocalEngine": "executor_local", "LocalExecutor": "executor_local", "Recipe": "recipe",
          "RecipeError": "recipe", "load_recipe": "recipe", "parse_recipe": "recipe", "InvariantError": "run",
          "Run": "run", "RunError": "run"}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"dataflywheel.pipeline.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'dataflywheel.pipeline' has no attribute {name!r}")
