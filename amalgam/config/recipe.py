"""The recipe, one import away: its schema (:mod:`amalgam.config.schema`) and loading (:mod:`amalgam.config.load`).

Library modules below the config (data, teachers, training) import the schema module itself:
loading runs the checks, and the checks need the registries those modules fill.
"""

from amalgam.config.load import (
    UniqueKeyLoader,
    apply_override,
    format_validation_error,
    load_recipe,
    merge_recipes,
    parse_recipe,
    read_recipe_file,
)
from amalgam.config.schema import (
    AmalgamationConfig,
    BudgetConfig,
    DataConfig,
    InputSpec,
    MixupConfig,
    ModelConfig,
    PeersConfig,
    Recipe,
    SearchConfig,
    SourceConfig,
    StudentConfig,
    TeacherConfig,
    TrainConfig,
    TypedConfig,
    recipe_changes,
)

__all__ = [
    "AmalgamationConfig",
    "BudgetConfig",
    "DataConfig",
    "InputSpec",
    "MixupConfig",
    "ModelConfig",
    "PeersConfig",
    "Recipe",
    "SearchConfig",
    "SourceConfig",
    "StudentConfig",
    "TeacherConfig",
    "TrainConfig",
    "TypedConfig",
    "UniqueKeyLoader",
    "apply_override",
    "format_validation_error",
    "load_recipe",
    "merge_recipes",
    "parse_recipe",
    "read_recipe_file",
    "recipe_changes",
]
