"""The model zoo: one recipe per pretrained encoder, built by an explicit call.

The zoo is on the workflow floor: it reads its recipes (`recipes`), builds
them with the training loop and the exporter (`builder`), writes their model
cards (`cards`) and checks a dataset against a recipe before a build
(`verify`). Nothing below it imports it.

Example:

>>> from ssl3d_keras import zoo
>>> "phantom-rotation" in zoo.list_recipes()
True
>>> export_dir = zoo.build("phantom-rotation")           # doctest: +SKIP
>>> encoder = zoo.load_encoder("phantom-rotation")       # doctest: +SKIP
"""

from ssl3d_keras.zoo.builder import build, cached_build, ensure_built, load_encoder, locate
from ssl3d_keras.zoo.cards import describe, render_card
from ssl3d_keras.zoo.recipes import (
    PACKAGE,
    Recipe,
    RecipeArtifact,
    RecipeData,
    get_recipe,
    input_facts,
    list_recipes,
    load_recipe,
    recipe_config,
    recipe_files,
    recipe_hash,
)
from ssl3d_keras.zoo.verify import VerifyReport, verify_recipe

__all__ = [
    "PACKAGE",
    "Recipe",
    "RecipeArtifact",
    "RecipeData",
    "build",
    "cached_build",
    "describe",
    "ensure_built",
    "get_recipe",
    "input_facts",
    "list_recipes",
    "load_encoder",
    "load_recipe",
    "locate",
    "recipe_config",
    "recipe_files",
    "recipe_hash",
    "VerifyReport",
    "render_card",
    "verify_recipe",
]
