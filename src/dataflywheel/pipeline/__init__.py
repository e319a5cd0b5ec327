"""Recipes, the run's books, and the engines that execute them."""

from dataflywheel.pipeline.executor_local import LocalEngine, LocalExecutor
from dataflywheel.pipeline.recipe import Recipe, RecipeError, load_recipe, parse_recipe
from dataflywheel.pipeline.run import InvariantError, Run, RunError

__all__ = ["InvariantError", "LocalEngine", "LocalExecutor", "Recipe", "RecipeError", "Run", "RunError",
           "load_recipe", "parse_recipe"]
