"""TOML recipes: one file describes a whole run; validated completely before anything heavy.

Typical use by the training engine::

    recipe = load_recipe("recipes/quickstart.toml", overrides=["optimizer.lr=0.05"])
    resuming = check_run_dir(recipe.run.output_dir, recipe, resume=args.resume)
    save_resolved_recipe(recipe, recipe.run.output_dir)
    model = create_model(recipe.model.to_dict(), dataset_info, recipe.activation.to_dict())
"""

from sat_toolkit.recipe.errors import Problem, RecipeError
from sat_toolkit.recipe.loader import load_recipe, recipe_from_toml
from sat_toolkit.recipe.numbers import is_fraction, parse_number
from sat_toolkit.recipe.overrides import apply_overrides, parse_override, parse_value
from sat_toolkit.recipe.rundir import (
    METRICS_FILE,
    MODEL_FILE,
    RECIPE_FILE,
    RUN_IRRELEVANT_KEYS,
    check_run_dir,
    save_resolved_recipe,
)
from sat_toolkit.recipe.schema import (
    AttackConfig,
    CheckpointConfig,
    DataConfig,
    EvalConfig,
    LoggingConfig,
    OptimizerConfig,
    PluginSpec,
    Recipe,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
)

__all__ = [
    "METRICS_FILE",
    "MODEL_FILE",
    "RECIPE_FILE",
    "RUN_IRRELEVANT_KEYS",
    "AttackConfig",
    "CheckpointConfig",
    "DataConfig",
    "EvalConfig",
    "LoggingConfig",
    "OptimizerConfig",
    "PluginSpec",
    "Problem",
    "Recipe",
    "RecipeError",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "check_run_dir",
    "is_fraction",
    "load_recipe",
    "parse_number",
    "parse_override",
    "parse_value",
    "recipe_from_toml",
    "save_resolved_recipe",
]
