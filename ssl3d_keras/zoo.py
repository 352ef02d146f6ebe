"""The model zoo: one TOML recipe per pretrained encoder, with its model card.

Recipes live in the top-level `zoo/` folder of the repository and ship in the
wheel as the package `ssl3d_keras.zoo_recipes` (read with
`importlib.resources`). A recipe names its data source and preprocessing, the
pretraining config (the `[pretrain]` table is a `PretrainConfig`), the
expected proxy metric ("not reported" where the paper gives none) and, once
published, the artifact URL and sha256. No weights are published yet: the
phantom recipes build on a CPU in minutes; the paper recipes need their data.

Example:

>>> from ssl3d_keras import zoo
>>> zoo.list_recipes()[:2]                       # doctest: +SKIP
['aptos-fundus-cpc-2d', 'aptos-fundus-exemplar-2d']
>>> export_dir = zoo.build("phantom-rotation")   # doctest: +SKIP
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
        source = Path(__file__).resolve().parent.parent / "zoo"
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
    try:
        data = tomllib.loads(files[name].read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"zoo/{name}.toml", f"does not parse: {e}") from None
    card_file = files[name].parent / f"{name}.md"
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


def _cannot_build(recipe, why):
    return ExportError(
        f"zoo entry '{recipe.name}': its weights were never published and {why}; "
        f"build it with: ssl3d zoo build {recipe.name} --data PATH")


def build(name, *, data=None, out=None, overrides=(), progress=True, cache=None):
    """Pretrain the recipe `name` and export it; returns the export folder.

    Args:
        name: a zoo name.
        data: the dataset folder (required for recipes with `data.requires`).
        out: output folder (holds `run/` and `export/`); default the cache entry
            `<cache>/zoo/<name>-<hash>/`.
        overrides: `key=value` strings applied to the `[pretrain]` table.
        progress: print training progress.
        cache: cache folder (default `$SSL3D_CACHE` or `~/.cache/ssl3d`).

    Raises:
        ExportError: the recipe needs data that was not given.
    """
    from ssl3d_keras.export.archive import cache_dir
    from ssl3d_keras.export.exporter import export_run
    from ssl3d_keras.training import pretrain

    recipe = get_recipe(name)
    if recipe.needs_data and data is None:
        raise _cannot_build(recipe, f"it needs {recipe.data.requires}, and no data was given")
    config = recipe_config(recipe, data, overrides)
    if out is None:
        out = Path(cache or cache_dir()) / "zoo" / f"{name}-{recipe_hash(recipe, data, overrides)}"
    out = Path(out)
    pretrain(config, out / "run", resume=(out / "run" / "config.json").is_file(),
             verbose=progress)
    export_run(out / "run", out / "export", data=input_facts(recipe))
    return out / "export"


def cached_build(name, *, cache=None):
    """The export folder of a cached default build of `name`, or None."""
    from ssl3d_keras.export.archive import cache_dir

    recipe = get_recipe(name)
    folder = Path(cache or cache_dir()) / "zoo" / f"{name}-{recipe_hash(recipe)}" / "export"
    return folder if (folder / "preset" / "metadata.json").is_file() else None


def ensure_built(name, *, cache=None, allow_build=True, progress=True):
    """A local folder with the encoder of zoo entry `name`.

    A published artifact is downloaded and verified; otherwise a cached build is
    used, or (for recipes that need no data, when `allow_build` is true) built now.

    Raises:
        ExportError: it is unpublished and needs data, or building is disabled.
    """
    recipe = get_recipe(name)
    if recipe.published:
        from ssl3d_keras.export.loader import resolve_handle

        return resolve_handle(recipe.artifact.url, sha256=recipe.artifact.sha256, cache=cache)
    found = cached_build(name, cache=cache)
    if found is not None:
        return found
    if recipe.needs_data:
        raise _cannot_build(recipe, f"it needs {recipe.data.requires}")
    if not allow_build:
        raise ExportError(f"zoo entry '{name}' is not built yet and building is disabled; "
                          f"run: ssl3d zoo build {name}")
    return build(name, progress=progress, cache=cache)


def describe(name):
    """Human-readable summary of a recipe (what `ssl3d zoo info` prints)."""
    r = get_recipe(name)
    p = r.pretrain
    lines = [
        f"{r.name}: {r.title}",
        "",
        r.description.strip(),
        "",
        f"task:          {p.get('task')}  {json.dumps(p.get('task_config', {}))}",
        f"encoder:       {r.architecture} {json.dumps(p.get('encoder', {}))}",
        f"data:          {r.data.source}",
        f"needs:         {r.data.requires or 'nothing (synthetic phantoms, builds on a CPU)'}",
        f"modality:      {r.data.modality}; channels {r.data.channel_names}",
        f"preprocessing: {r.data.preprocessing}",
        f"optimizer:     {json.dumps(p.get('optimizer', {}))}",
        f"schedule:      steps={p.get('steps')} epochs={p.get('epochs')} "
        f"batch_size={p.get('batch_size')}",
        f"proxy metric:  {r.expected.get('proxy_metric', 'not reported')}",
        f"weights:       {r.artifact.url + ' sha256=' + str(r.artifact.sha256) if r.published else r.artifact.status}",  # noqa: E501
    ]
    if not r.published:
        how = (f"ssl3d zoo build {r.name} --data PATH" if r.needs_data
               else f"ssl3d zoo build {r.name}  (or ssl3d_keras.load_encoder('{r.name}'))")
        lines.append(f"build:         {how}")
    return "\n".join(lines)


def render_card(recipe, metadata=None):
    """Model card Markdown of a recipe, with the export's metadata when built.

    Says what to feed the encoder, how it was pretrained, what is known of its
    quality, and how to load it in each client.
    """
    r = recipe
    p = r.pretrain
    d = r.data
    handle = f"{r.name}" if not r.published else f"{r.artifact.url}#sha256={r.artifact.sha256}"
    lines = [
        f"# {r.name}: {r.title}", "",
        r.description.strip(), "",
        "## Status", "",
        f"Weights: {r.artifact.status}." + ("" if r.published else
            (f" Build them with `ssl3d zoo build {r.name} --data PATH` (needs {d.requires})."
             if r.needs_data else
             f" `ssl3d zoo build {r.name}` or `ssl3d_keras.load_encoder(\"{r.name}\")` builds "
             "them on a CPU in minutes and caches the result.")),
        "",
        "## Input", "",
        f"- Data: {d.source}",
        f"- Modality: {d.modality}; channels (in order): {', '.join(d.channel_names)}",
        "- Axis order: channels-last `(batch, D, H, W, C)`, canonical RAS voxel order"
        if p.get("data", {}).get("dim", 3) == 3 else "- Axis order: `(batch, H, W, C)`",
        f"- Spacing: {d.spacing if d.spacing else 'native'}",
        f"- Intensity normalisation: {d.normalization}",
        f"- Preprocessing: {d.preprocessing}",
        "",
        "## Pretraining", "",
        f"- Task: `{p.get('task')}` with `{json.dumps(p.get('task_config', {}))}`",
        f"- Encoder: {r.architecture} `{json.dumps(p.get('encoder', {}))}`",
        f"- Optimiser: `{json.dumps(p.get('optimizer', {}))}`",
        f"- Schedule: steps={p.get('steps')}, epochs={p.get('epochs')}, "
        f"batch size {p.get('batch_size')}, input size {p.get('data', {}).get('input_size')}",
        f"- Expected proxy metric: {r.expected.get('proxy_metric', 'not reported')}",
    ]
    if r.expected.get("notes"):
        lines.append(f"- Notes: {r.expected['notes']}")
    if d.downstream:
        lines.append(f"- Downstream: {d.downstream}")
    if metadata:
        inp, out = metadata.get("input", {}), metadata.get("outputs", {})
        lines += ["", "## This build", "",
                  f"- Parameters: {metadata.get('encoder', {}).get('parameter_count')}",
                  f"- Input: {inp.get('shape')}, min size {inp.get('min_input_size')}, "
                  f"divisible by {inp.get('divisible_by')}",
                  f"- Features: stride {out.get('features', {}).get('stride')}, "
                  f"{out.get('features', {}).get('channels')} channels",
                  f"- Skips: {json.dumps(out.get('skips', {}))}",
                  f"- Proxy metrics: {json.dumps(metadata.get('pretraining', {}).get('final_metrics'))}",  # noqa: E501
                  f"- Versions: {json.dumps(metadata.get('versions', {}))}"]
    lines += [
        "", "## Load it", "",
        "Keras 3 (the original class, with `skips_model()`):", "",
        "```python", "import ssl3d_keras",
        f"encoder = ssl3d_keras.load_encoder(\"{handle}\")", "```", "",
        "Keras 3, fine-tuning the SavedModel (any optimizer, BatchNorm statistics updated):", "",
        "```python", "from ssl3d_keras.export import SavedModelLayer",
        "features = SavedModelLayer(\"EXPORT/savedmodel\")(inputs)", "```", "",
        "tf_keras (Keras 2) with TF Hub, fine-tunable:", "",
        "```python", "import tensorflow_hub as hub",
        "features = hub.KerasLayer(\"EXPORT/savedmodel\", trainable=True)(inputs)",
        "skips = hub.load(\"EXPORT/savedmodel\").skips(x, training=False)", "```", "",
        "Inference in Keras 3 without ssl3d_keras:", "",
        "```python",
        "layer = keras.layers.TFSMLayer(\"EXPORT/savedmodel\", call_endpoint=\"serving_default\")",
        "features = layer(x)[\"features\"]", "```", "",
        "TF Serving: the `serving_default` signature takes `inputs` and returns `features`; "
        "`serving_skips` returns the skip connections. Check with "
        "`saved_model_cli show --dir EXPORT/savedmodel --all`.", "",
    ]
    return "\n".join(lines)
