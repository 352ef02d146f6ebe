"""The zoo: every recipe parses into a PretrainConfig, builds or says plainly why not,
and the recipes ship inside the wheel."""

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ssl3d_keras import zoo
from ssl3d_keras.errors import ConfigError, ExportError
from ssl3d_keras.tasks import list_tasks
from ssl3d_keras.training import PretrainConfig
from ssl3d_keras.training.run import check_config

REPO = Path(__file__).resolve().parent.parent
TASKS = ("cpc", "rotation", "jigsaw", "rpl", "exemplar")


def test_every_paper_and_phantom_recipe_is_there():
    names = set(zoo.list_recipes())
    for task in TASKS:
        assert {f"ukb-brain-{task}", f"pancreas-ct-{task}", f"pancreas-ct-{task}-2d",
                f"aptos-fundus-{task}-2d", f"phantom-{task}"} <= names
    assert names == {p.stem for p in (REPO / "zoo").glob("*.toml")}


# The authors' pretraining configs at HealthML/self-supervised-3d-tasks@ecc86ef
# (self_supervised_3d_tasks/configs/train/<file>): batch_size, lr, epochs, and the patch
# jitter of jigsaw/rpl, as the files state them. Their batch counts examples; the recipes'
# batch_size counts volumes, crops or images (see each recipe's `deviations`).
AUTHORS = {
    "pancreas-ct": ("{task}_3d.json", {"rotation": 4, "jigsaw": 8, "rpl": 32, "exemplar": 2,
                                       "cpc": 32}, 1e-4, 1000, 3),
    "pancreas-ct-2d": ("{task}_2d_pancreas.json", {"rotation": 64, "jigsaw": 64, "rpl": 64,
                                                   "exemplar": 64, "cpc": 256}, 1e-5, 250, 4),
    "ukb-brain": ("{task}_3d_ukb.json", {"rotation": 4, "jigsaw": 8, "rpl": 32, "exemplar": 2,
                                         "cpc": 32}, 1e-4, 1000, 3),
    "aptos-fundus-2d": ("{task}_2d.json", {"rotation": 32, "jigsaw": 32, "rpl": 32,
                                           "exemplar": 16, "cpc": 64}, 1e-5, 1000, 8),
}
# CPC's examples per volume (2 x grid**(dim-1): a positive and a negative per column) and
# the crops UK Biobank's loader cuts per scan, which turn their batch into ours.
CPC_EXAMPLES = {3: 32, 2: 10}
UKB_CROPS = 2


def _family(name):
    for task in TASKS:
        if f"-{task}" in name:
            stem = name.replace(f"-{task}", "")
            return stem, task
    raise AssertionError(name)


@pytest.mark.parametrize("name", zoo.list_recipes())
def test_recipe_is_valid_and_has_a_card(name):
    recipe = zoo.get_recipe(name)
    config = zoo.recipe_config(recipe, data="/data/somewhere")
    assert isinstance(config, PretrainConfig) and config.task in list_tasks()
    assert config.data.path == "/data/somewhere"
    # What a run checks before any work: task and encoder keys, preprocessing, input size.
    check_config(config)
    assert recipe.card.startswith(f"# {name}:") and "## Load it" in recipe.card
    # The card is the rendering of the recipe (a build may add its metadata before "Load it").
    rendered = zoo.render_card(recipe).split("\n## Load it")[0]
    assert recipe.card.startswith(rendered), "regenerate: python tools/zoo_admin.py cards"
    assert recipe.expected.get("proxy_metric")  # a number or an honest "not reported"
    assert not recipe.published and "not published" in recipe.artifact.status
    assert recipe.sources and "## Sources" in recipe.card
    if recipe.paper:
        assert recipe.needs_data
        assert config.optimizer.name == "adam" and config.optimizer.schedule == "constant"
        if recipe.architecture == "unet":
            assert config.encoder == {"depth": 4, "base_filters": 16, "bottleneck_filters": 256,
                                      "norm": "batch", "dropout": 0.5, "final_pool": True}
            assert config.data.input_size == 128
        else:
            assert config.encoder == {"architecture": recipe.architecture}
            assert config.data.dim == 2 and config.data.layout == "images2d"
            assert config.data.input_size == 224
            assert config.data.preprocess["resize"] == [224, 224]
    if config.task == "jigsaw" and recipe.paper:
        assert config.task_config["num_permutations"] == 100


@pytest.mark.parametrize("name", [n for n in zoo.list_recipes() if not n.startswith("phantom")])
def test_paper_recipes_carry_the_authors_values_and_say_where_from(name):
    recipe = zoo.get_recipe(name)
    config = zoo.recipe_config(recipe)
    family, task = _family(name)
    file, batches, lr, epochs, jitter = AUTHORS[family]
    file = file.format(task=task)
    assert config.optimizer.learning_rate == (1e-3 if name == "ukb-brain-cpc" else lr)
    assert config.epochs == epochs
    theirs = batches[task]
    if task == "cpc":
        theirs = round(theirs / CPC_EXAMPLES[config.data.dim])
    elif family == "ukb-brain":
        assert config.data.crops_per_volume == UKB_CROPS
    assert config.batch_size == theirs
    if task in ("jigsaw", "rpl"):
        assert (config.task_config["grid"], config.task_config["jitter"]) == (3, jitter)
    if task == "exemplar":  # their sample_neg_examples_from = "dataset"
        assert config.task_config["negatives"] == "bank"
        assert (config.task_config.get("augmentation") == "fundus") == (family == "aptos-fundus-2d")
    # The source names the authors' config file at the commit read.
    assert any(f"HealthML/self-supervised-3d-tasks@ecc86ef `self_supervised_3d_tasks/configs/"
               f"train/{file}`" in line for line in recipe.sources), recipe.sources
    assert "## Deviations from the authors' code" in recipe.card and recipe.deviations
    if config.batch_size != batches[task]:
        assert any(line.startswith(f"Batch size {config.batch_size}:")
                   for line in recipe.deviations)
    text = tomllib.loads((REPO / "zoo" / f"{name}.toml").read_text())
    assert "assum" not in json.dumps(text), "a paper recipe states sources, not assumptions"


@pytest.mark.parametrize("name", [n for n in zoo.list_recipes() if n.startswith("pancreas-ct")])
def test_pancreas_recipes_crop_ct_air_resize_and_hold_out_test_cases(name):
    config = zoo.recipe_config(zoo.get_recipe(name))
    prep = config.data.preprocess
    assert prep["crop_foreground"] is True and prep["foreground_threshold"] == -500
    assert prep["resize"] == [128, 128, 128] and "shape" not in prep
    assert config.data.include_unlabelled is True
    assert config.data.holdout == {"test_fraction": 0.2, "seed": 0}
    if name.endswith("-2d"):
        assert (config.data.dim, config.data.slice_axis) == (2, 2)


def test_pancreas_recipe_prepares_imagests_and_leaves_out_the_test_cases(tmp_path, rng):
    """The recipe's data table as the run reads it: the unlabelled imagesTs case is in, the
    cases fine-tuning will test on (its default split) are out before anything is read."""
    from ssl3d_keras.data import Manifest
    from ssl3d_keras.downstream.splits import make_splits
    from ssl3d_keras.training.run import resolve_config
    from tests.zoo.helpers_ct import add_unlabelled_case, write_ct_decathlon

    data = add_unlabelled_case(write_ct_decathlon(tmp_path / "Task07", rng, n=5,
                                                  shape=(20, 18, 12)))
    recipe = zoo.get_recipe("pancreas-ct-rotation")
    config = zoo.recipe_config(recipe, data, overrides=["data.preprocess.resize=[16,16,16]",
                                                        "data.input_size=16", "encoder.depth=1"])
    resolved = resolve_config(config, tmp_path / "run", verbose=False)
    manifest = Manifest.read(resolved.data.prepared)
    test = make_splits([f"pancreas_{i:03d}" for i in range(5)]).test
    ids = [case["id"] for case in manifest.cases]
    assert "pancreas_100" in ids and len(ids) == 6 - len(test)
    assert not set(test) & set(ids) and manifest.held_out["ids"] == sorted(test)
    assert {tuple(case["final_shape"]) for case in manifest.cases} == {(16, 16, 16, 1)}


def test_quoted_dice_values_name_their_source():
    for name in zoo.list_recipes():
        downstream = zoo.get_recipe(name).data.downstream
        if "Dice at" in downstream:
            assert name.startswith("ukb-brain-")
            assert "plot_results.py` `get_brats_data()`" in downstream
            assert "b2bced1" in downstream and "Uncertain" in downstream


def test_channels_match_the_data():
    assert zoo.get_recipe("ukb-brain-rotation").data.channel_names == ["T1", "T2-FLAIR"]
    assert zoo.get_recipe("pancreas-ct-rpl").data.channel_names == ["CT"]
    assert zoo.get_recipe("aptos-fundus-jigsaw-2d").pretrain["data"]["dim"] == 2


def test_unknown_and_invalid_recipes(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="did you mean 'phantom-rotation'"):
        zoo.get_recipe("phantom-rotaton")
    recipe = zoo.get_recipe("phantom-rotation")
    with pytest.raises(ConfigError, match="stepz"):
        zoo.recipe_config(recipe, overrides=["stepz=3"])
    bad = tmp_path / "zoo"
    bad.mkdir()
    text = (REPO / "zoo" / "phantom-rotation.toml").read_text()
    (bad / "phantom-rotation.toml").write_text(text.replace("paper = false", "papr = false"))
    monkeypatch.setattr(zoo.recipes, "_recipes_root", lambda: bad)
    with pytest.raises(ConfigError, match="papr"):
        zoo.get_recipe("phantom-rotation")
    # The recipe's architecture must be the one its pretrain.encoder table builds.
    fundus = (REPO / "zoo" / "aptos-fundus-rpl-2d.toml").read_text()
    (bad / "aptos-fundus-rpl-2d.toml").write_text(
        fundus.replace('[pretrain.encoder]\narchitecture = "densenet121"\n', ""))
    with pytest.raises(ConfigError, match="pretrain.encoder.architecture.*'densenet121'"):
        zoo.get_recipe("aptos-fundus-rpl-2d")


def test_unpublished_recipes_that_need_data_say_so(tmp_path):
    from ssl3d_keras import load_encoder

    with pytest.raises(ExportError, match="never published .* UK Biobank .* ssl3d zoo build "
                                          "ukb-brain-rotation --data PATH"):
        load_encoder("ukb-brain-rotation", cache=tmp_path)
    with pytest.raises(ExportError, match="needs the APTOS 2019 training images"):
        zoo.build("aptos-fundus-rotation-2d")
    # Loading never trains: an entry that is not built says how to build it.
    with pytest.raises(ExportError, match=r"not built yet; build it with: ssl3d zoo build "
                                          r"phantom-rotation \(or ssl3d_keras.zoo.build"):
        load_encoder("phantom-rotation", cache=tmp_path)
    assert not (tmp_path / "zoo").exists()
    assert "ssl3d zoo build pancreas-ct-cpc --data PATH" in zoo.describe("pancreas-ct-cpc")


def test_build_tiny_phantom_and_load_from_cache(tmp_path, rng):
    """A phantom recipe builds (shrunk by overrides) and load_encoder finds the cached build."""
    import numpy as np

    from ssl3d_keras import load_encoder

    overrides = ["steps=2", "batch_size=2", "data.input_size=16", "data.phantoms.n=2",
                 "data.phantoms.size=16", "encoder.depth=1", "encoder.base_filters=2",
                 "task_config.head_units=[8]"]
    export = zoo.build("phantom-rotation", overrides=overrides, progress=False, cache=tmp_path)
    assert export.parent.parent == tmp_path / "zoo"
    meta_file = export / "preset" / "metadata.json"
    assert meta_file.is_file() and (export / "hub.tar.gz").is_file()
    model = load_encoder(export)
    assert model.ssl3d_metadata["input"]["modality"] == "synthetic phantom"
    assert model.ssl3d_metadata["pretraining"]["steps"] == 2
    # The cache entry of the default recipe is what load_encoder(name) uses: place this
    # build there (as a previous build would) and check no new training happens.
    default = tmp_path / "zoo" / f"phantom-rotation-{zoo.recipe_hash(zoo.get_recipe('phantom-rotation'))}"
    shutil.copytree(export.parent, default)
    cached = load_encoder("phantom-rotation", cache=tmp_path)
    x = rng.normal(size=(1, 8, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(cached(x), model(x), atol=1e-6)


@pytest.mark.slow
def test_fundus_recipe_builds_a_densenet_from_an_images2d_folder(tmp_path, rng):
    """aptos-fundus-rotation-2d on eight 64x64 RGB PNGs (shrunk by overrides): a DenseNet-121
    export whose metadata carries the recipe's input facts."""
    import numpy as np
    from PIL import Image

    from ssl3d_keras.export import load_encoder
    from ssl3d_keras.models import DenseNetEncoder

    images = tmp_path / "fundus"
    images.mkdir()
    for i in range(8):
        pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"case{i}.png")
    overrides = ["epochs=1", "batch_size=4", "data.input_size=32", "task_config.head_units=[8]",
                 "task_config.head_dropout=0.0"]
    export = zoo.build("aptos-fundus-rotation-2d", data=images, out=tmp_path / "build",
                       overrides=overrides, progress=False)
    encoder = load_encoder(export)
    assert type(encoder) is DenseNetEncoder and encoder.input_channels == 3
    meta = encoder.ssl3d_metadata
    assert meta["pretraining"]["steps"] == 2  # 8 images / batch 4, one epoch
    assert meta["input"]["channel_names"] == ["R", "G", "B"]
    assert meta["input"]["modality"] == "fundus photograph (RGB)"
    assert (meta["input"]["min_input_size"], meta["input"]["divisible_by"]) == (32, 32)
    assert (export / "hub.tar.gz").is_file()


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.relative_to(REPO).parts) for p in (REPO / "ssl3d_keras").rglob("*")
             if p.is_dir() and any(p.glob("*.py"))} | {"ssl3d_keras"}
    assert found | {"ssl3d_keras.zoo_recipes"} == listed


@pytest.mark.subprocess
def test_recipes_ship_in_the_wheel(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("ssl3d_keras", "zoo"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # Without setuptools here, pip builds in an isolated env (fetches setuptools).
    isolation = ["--no-build-isolation"] if _has_setuptools() else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", *isolation,
                    "-w", str(tmp_path / "dist")], cwd=src, check=True, env=env)
    wheel = next((tmp_path / "dist").glob("ssl3d_keras-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, env=env)
    code = ("import ssl3d_keras.zoo as z, ssl3d_keras.zoo_recipes as r; "
            "print(z.__file__); print(r.__file__); print(' '.join(z.list_recipes())); "
            "print(z.get_recipe('phantom-jigsaw').card.splitlines()[0])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={**env, "PYTHONPATH": str(target)}, check=True).stdout
    zoo_file, recipes_file, names, card = out.splitlines()
    assert zoo_file.startswith(str(target)) and recipes_file.startswith(str(target))
    assert names.split() == zoo.list_recipes()
    assert card.startswith("# phantom-jigsaw:")


def _has_setuptools():
    probe = subprocess.run([sys.executable, "-c", "import setuptools"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.subprocess
def test_phantom_recipe_builds_and_round_trips_every_client(tmp_path, monkeypatch):
    """The real phantom-rotation recipe: load_encoder builds it into the cache, a second call
    reuses the build, and its export passes every client."""
    import time

    from ssl3d_keras.export import load_encoder, verify

    monkeypatch.setenv("SSL3D_CACHE", str(tmp_path))
    encoder = load_encoder("phantom-rotation")
    export = zoo.cached_build("phantom-rotation")
    assert export is not None and export.is_relative_to(tmp_path)
    meta = encoder.ssl3d_metadata
    assert meta["pretraining"]["steps"] == 200 and meta["pretraining"]["task"] == "rotation"
    started = time.monotonic()
    again = load_encoder("phantom-rotation", build=False)
    assert time.monotonic() - started < 60
    assert again.ssl3d_metadata == meta
    probe = verify.write_probe(encoder, tmp_path / "probe.npz")
    verify.verify_export(export / "savedmodel", probe)
