"""Recipes and executors."""

from dataflywheel.pipeline.executor_local import InvariantError, LocalExecutor, RunError
from dataflywheel.pipeline.recipe import Recipe, RecipeError, load_recipe, parse_recipe

__all__ = ["InvariantError", "LocalExecutor", "Recipe", "RecipeError", "RunError", "load_recipe", "parse_recipe"]
