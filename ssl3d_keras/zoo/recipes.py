"""The zoo's recipes: one TOML file per pretrained encoder, read and checked here.

Recipes live in the top-level `zoo/` folder of the repository and ship in the
wheel as the package `ssl3d_keras.zoo_recipes` (read with
`importlib.resources`). A recipe names its data source and preprocessing, the
pretraining config (the `[pretrain]` table is a `PretrainConfig`), the
expected proxy metric ("not reported" where the paper gives none) and, once
published, the artifact URL and sha256.

Example:

>>> from ssl3d_keras import zoo
>>> zoo.list_recipes()[:2]
['aptos-fundus-cpc-2d', 'aptos-fundus-exemplar-2d']
>>> zoo.get_recipe("phantom-rotation").needs_data
False
"""

import dataclasses
import hashlib
import importlib.resources
import json
import tomllib
from pathlib import Path
from typing import Literal

from ssl3d_keras.config import closest, from_dict
from ssl3d_keras.errors import ConfigError, ExportError

__all__ = ["Recipe", "RecipeArtifact", "RecipeData", "get_recipe", "input_facts",
           "list_recipes", "load_recipe", "recipe_config", "recipe_files", "recipe_hash"]

PACKAGE = "ssl3d_keras.zoo_recipes"


@dataclasses.dataclass
class RecipeData:
    """Where the pretraining data comes from and what the encoder expects.

    Args:
        source: the dataset and where to get it.
        requires: what a user must supply with `--data` (None: builds from phantoms).
        modality: e.g. "MRI", "CT", "fundus photograph", "synthetic phantom".
        channel_names: channel order of the input.
        spacing: voxel spacing in mm (pixel spacing for 2D), or None (native).
        normalization: intensity normalisation applied before the encoder.
        preprocessing: the preprocessing steps, in words.
        downstream: the paper's downstream evaluation for this encoder.
    """

    source: str
    modality: str
    channel_names: list[str]
    normalization: str
    preprocessing: str
    requires: str | None = None
    spacing: list[float] | None = None
    downstream: str = ""


@dataclasses.dataclass
class RecipeArtifact:
    """A published export: URL of its `hub.tar.gz` and sha256, or none yet."""

    url: str | None = None
    sha256: str | None = None
    status: str = "not published"


@dataclasses.dataclass
class Recipe:
    """One zoo entry (a recipe TOML file).

    Args:
        name: the zoo name (file stem).
        title: one line.
        description: a paragraph.
        paper: True for the settings of Taleb et al. (2020).
        architecture: "unet" or "densenet121" (the paper's 2D fundus encoder);
            must equal `pretrain.encoder.architecture` (default "unet"), which
            is what the build uses.
        data: a `RecipeData`.
        pretrain: a `PretrainConfig` table (without `data.path`).
        expected: `proxy_metric` and `notes` (what is known of the outcome).
        artifact: a `RecipeArtifact`.
        sources: where each value comes from (for the paper recipes: the file and
            commit in the authors' repository), one line each.
        deviations: where the recipe differs from the authors' code, and why.
        card: the model card Markdown (filled in from `<name>.md`).
    """

    name: str
    title: str
    description: str
    data: RecipeData
    pretrain: dict
    paper: bool = False
    architecture: Literal["unet", "densenet121"] = "unet"
    expected: dict = dataclasses.field(default_factory=dict)
    artifact: RecipeArtifact = dataclasses.field(default_factory=RecipeArtifact)
    sources: list[str] = dataclasses.field(default_factory=list)
    deviations: list[str] = dataclasses.field(default_factory=list)
    card: str = ""

    @property
    def needs_data(self):
        return self.data.requires is not None

    @property
    def published(self):
        return bool(self.artifact.url and self.artifact.sha256)


def recipe_files():
    """`{name: Traversable}` of every recipe TOML shipped with the package."""
    root = _recipes_root()
    return {p.name[:-5]: p for p in root.iterdir() if p.name.endswith(".toml")}


def _recipes_root():
    try:
        return importlib.resources.files(PACKAGE)
    except ModuleNotFoundError:
        # A source checkout run without installing (PYTHONPATH=.): the recipes
        # are in the top-level zoo/ folder beside the package.
        source = Path(__file__).resolve().parents[2] / "zoo"
        if source.is_dir():
            return source
        raise ExportError(f"the zoo recipes ({PACKAGE}) are not installed with ssl3d_keras; "
                          "reinstall the package") from None


def list_recipes():
    """Sorted names of the zoo's recipes."""
    return sorted(recipe_files())


def get_recipe(name):
    """Read and validate the recipe `name`.

    Raises:
        ConfigError: unknown name (with the closest match) or an invalid recipe.
    """
    files = recipe_files()
    if name not in files:
        raise ConfigError("zoo", f"no recipe named {name!r}{closest(name, files)}; "
                          f"known: {', '.join(sorted(files))}")
    return _parse(files[name], name)


def load_recipe(path):
    """Read and validate a recipe TOML file outside the zoo (its card `<name>.md` beside it).

    Args:
        path: a `<name>.toml` file; `name` in it must equal the file's stem.

    Raises:
        ConfigError: the file is missing or is not a valid recipe.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("zoo", f"recipe file not found. Received: {str(path)!r}")
    return _parse(path, path.name[: -len(".toml")] if path.name.endswith(".toml") else path.stem)


def _parse(file, name):
    try:
        data = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"zoo/{name}.toml", f"does not parse: {e}") from None
    card_file = file.parent / f"{name}.md"
    data.setdefault("card", card_file.read_text() if card_file.is_file() else "")
    recipe = from_dict(Recipe, data, prefix=f"zoo/{name}.toml")
    if recipe.name != name:
        raise ConfigError(f"zoo/{name}.toml:name", f"must equal the file name. Received: "
                          f"{recipe.name!r}")
    built = (recipe.pretrain.get("encoder") or {}).get("architecture", "unet")
    if built != recipe.architecture:
        raise ConfigError(f"zoo/{name}.toml:pretrain.encoder.architecture",
                          f"must equal the recipe's architecture {recipe.architecture!r} (the "
                          f"build uses this one). Received: {built!r}")
    return recipe


def recipe_config(recipe, data=None, overrides=()):
    """The `PretrainConfig` of a recipe, with `data.path` and `key=value` overrides.

    The same assembly as `ssl3d pretrain TASK --config RECIPE`
    (`ssl3d_keras.training.assemble.assemble_config`).

    Raises:
        ConfigError: a key the training config does not know.
    """
    from ssl3d_keras.training.assemble import assemble_config

    return assemble_config(recipe.pretrain.get("task"), config=recipe.pretrain, data=data,
                           overrides=list(overrides), prefix=f"zoo/{recipe.name}.toml:pretrain")


def recipe_hash(recipe, data=None, overrides=()):
    """Short hash of what determines a build (the pretrain table, data path, overrides)."""
    data = str(Path(data).resolve()) if data else None
    payload = json.dumps([recipe.pretrain, data, list(overrides)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def input_facts(recipe):
    """The recipe's data facts in the form `metadata.input_description` reads."""
    d = recipe.data
    return {"source": d.source, "modality": d.modality, "channel_names": d.channel_names,
            "spacing": d.spacing, "normalization": d.normalization}
