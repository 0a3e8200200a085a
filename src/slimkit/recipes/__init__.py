"""Recipes: YAML pipelines of compression steps (prune -> fine-tune/distill -> factorize -> quantize),
resumable, with built-in recipes; and the accuracy-budget search over them (search.py, needs optuna).

>>> result = run_pipeline(reference("cnn"), load_recipe("sparse-90"), "out/cnn-sparse")  # doctest: +SKIP
"""

from slimkit.recipes.pipeline import PipelineResult, StepFailed, run_pipeline
from slimkit.recipes.recipe import Recipe, Step, builtin_recipes, load_recipe, parse_recipe
from slimkit.recipes.yaml_errors import RecipeError

__all__ = ["PipelineResult", "Recipe", "RecipeError", "Step", "StepFailed", "builtin_recipes", "load_recipe",
           "parse_recipe", "run_pipeline"]
