"""`finetune` end to end on tiny phantoms: outputs, schedules, resume, predictions, bad input."""

import json

import nibabel as nib
import numpy as np
import pytest

from ssl3d_keras.config import set_dotted
from ssl3d_keras.downstream.finetune import finetune, load_finetuned
from ssl3d_keras.errors import ConfigError, DataError

TINY_ENCODER = {"depth": 2, "base_filters": 4, "dropout": 0.0}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Ten labelled 24^3 phantoms, written as NIfTI and prepared once for the module."""
    from ssl3d_keras.data.phantoms import write_phantom_dataset
    from ssl3d_keras.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("finetune-data")
    write_phantom_dataset(root / "phantoms", 10, size=24, seed=1000)
    prepare_dataset(root / "phantoms", root / "prepared", progress=False)
    return root / "prepared"


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A preset of a tiny (untrained) encoder, as `ssl3d export` writes it."""
    from ssl3d_keras.export.preset import save_preset
    from ssl3d_keras.models.factory import build_encoder

    encoder = build_encoder(TINY_ENCODER, input_channels=1, dim=3)
    out = tmp_path_factory.mktemp("preset") / "preset"
    save_preset(encoder, out)
    return out


def tiny(prepared, **changes):
    config = {"scratch": True, "scratch_encoder": dict(TINY_ENCODER), "steps": 6,
              "warmup_steps": 2, "batch_size": 2, "patch_size": 16, "checkpoint_every": 2,
              "log_every": 2, "evaluation": {"validate_every": 3},
              "split": {"test_fraction": 0.2, "validation_fraction": 0.15},
              "data": {"prepared": str(prepared)}}
    for key, value in changes.items():
        set_dotted(config, key, value)
    return config


def test_a_run_writes_its_records_and_scores_the_fixed_test_cases(prepared, tmp_path):
    summary = finetune(tiny(prepared), tmp_path / "run", verbose=False)
    run = tmp_path / "run"
    for name in ("config.json", "splits.json", "training.csv", "validation.csv", "metrics.json",
                 "metrics.csv", "model.keras", "summary.json", "preprocessing.json"):
        assert (run / name).is_file(), name
    splits = json.loads((run / "splits.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert sorted(c["case"] for c in metrics["cases"]) == splits["test"]
    assert not set(splits["test"]) & set(splits["train"])
    # the phantom task: 4 foreground classes, background never scored
    assert {"dice_ventricles", "dice_lesion", "hd95_left nucleus"} <= set(metrics["cases"][0])
    assert "dice_background" not in metrics["cases"][0]
    assert summary["test"]["dice_mean"]["n"] == len(splits["test"])
    # validation every 3 steps and at the end
    assert (run / "validation.csv").read_text().count("\n") == 3


def test_predictions_lie_on_the_source_grid(prepared, tmp_path):
    finetune(tiny(prepared), tmp_path / "run", verbose=False)
    manifest = json.loads((prepared / "manifest.json").read_text())
    cases = {c["id"]: c for c in manifest["cases"]}
    written = sorted((tmp_path / "run" / "predictions").glob("*.nii.gz"))
    assert written
    for path in written:
        source = nib.load(cases[path.name[: -len(".nii.gz")]]["sources"][0])
        prediction = nib.load(path)
        assert prediction.shape == source.shape[:3]
        np.testing.assert_allclose(prediction.affine, source.affine, atol=1e-6)
        assert set(np.unique(np.asarray(prediction.dataobj))) <= set(range(5))


def _encoder_weights(model):
    from ssl3d_keras.downstream.models import encoder_variables

    return [v.numpy() for v in encoder_variables(model)]


def test_frozen_keeps_every_encoder_weight_and_warmup_changes_them(prepared, preset, tmp_path):
    from ssl3d_keras.export.loader import load_encoder

    original = [w.numpy() for w in load_encoder(preset).weights]
    frozen_run = finetune(tiny(prepared, scratch=False, encoder=str(preset), schedule="frozen"),
                          tmp_path / "frozen", verbose=False)
    frozen, _ = load_finetuned(frozen_run["run_dir"])
    after = _encoder_weights(frozen)
    assert len(after) == len(original)
    for a, b in zip(sorted(after, key=np.size), sorted(original, key=np.size), strict=True):
        np.testing.assert_array_equal(np.sort(a, axis=None), np.sort(b, axis=None))

    finetune(tiny(prepared, scratch=False, encoder=str(preset), schedule="warmup"),
             tmp_path / "warmup", verbose=False)
    warm, _ = load_finetuned(tmp_path / "warmup")
    changed = [not np.array_equal(np.sort(a, axis=None), np.sort(b, axis=None)) for a, b in
               zip(sorted(_encoder_weights(warm), key=np.size), sorted(original, key=np.size),
                   strict=True)]
    assert sum(changed) >= len(changed) // 2


def test_a_killed_run_resumes_from_its_checkpoint(prepared, tmp_path, monkeypatch):
    from ssl3d_keras.downstream import trainer

    real = trainer.make_train_step
    calls = {"n": 0}

    def dying(*args, **kwargs):
        step = real(*args, **kwargs)

        def wrapped(images, labels):
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt  # killed during step 5, after the checkpoint of step 4
            return step(images, labels)

        return wrapped

    monkeypatch.setattr(trainer, "make_train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny(prepared), tmp_path / "run", verbose=False)
    monkeypatch.setattr(trainer, "make_train_step", real)
    assert not (tmp_path / "run" / "summary.json").exists()
    summary = finetune(None, tmp_path / "run", resume=True, verbose=False)
    assert summary["steps"] == 6
    steps = [int(line.split(",")[0]) for line in
             (tmp_path / "run" / "training.csv").read_text().splitlines()[1:]]
    assert steps == [2, 4, 6]  # rows after the checkpoint were dropped, none repeated


def test_starting_over_an_existing_run_is_refused(prepared, tmp_path):
    finetune(tiny(prepared, steps=2, warmup_steps=1), tmp_path / "run", verbose=False)
    with pytest.raises(ConfigError, match="already holds"):
        finetune(tiny(prepared, steps=2, warmup_steps=1), tmp_path / "run", verbose=False)


def test_no_encoder_and_no_scratch_is_a_config_error(prepared, tmp_path):
    with pytest.raises(ConfigError, match="'encoder'"):
        finetune(tiny(prepared, scratch=False), tmp_path / "run", verbose=False)


def test_a_patch_the_encoder_cannot_take_is_refused_before_training(prepared, tmp_path):
    with pytest.raises(ConfigError, match="patch_size"):
        finetune(tiny(prepared, patch_size=18), tmp_path / "run", verbose=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_channel_mismatch_says_how_to_adapt(prepared, tmp_path):
    from ssl3d_keras.export.preset import save_preset
    from ssl3d_keras.models.factory import build_encoder

    two = tmp_path / "two-channel"
    save_preset(build_encoder(TINY_ENCODER, input_channels=2, dim=3), two)
    with pytest.raises(ConfigError, match="adapt_channels"):
        finetune(tiny(prepared, scratch=False, encoder=str(two)), tmp_path / "run",
                 verbose=False)
    summary = finetune(tiny(prepared, scratch=False, encoder=str(two), adapt_channels="mean",
                            steps=2, warmup_steps=1), tmp_path / "adapted", verbose=False)
    assert "by mean" in summary["encoder"]


def test_a_dataset_without_labels_is_refused(tmp_path):
    from ssl3d_keras.data.phantoms import make_phantom
    from ssl3d_keras.data.prepare import prepare_dataset

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for i in range(3):
        image, _ = make_phantom((0, i), size=16)
        nib.save(nib.Nifti1Image(image[..., 0], np.eye(4)), str(folder / f"scan{i}.nii.gz"))
    prepare_dataset(folder, tmp_path / "prepared", progress=False)
    with pytest.raises(DataError, match="no label maps"):
        finetune(tiny(tmp_path / "prepared", **{"data.num_classes": 3}), tmp_path / "run",
                 verbose=False)


def test_labels_outside_the_declared_classes_are_refused(prepared, tmp_path):
    # Without the phantom label map the stored values reach 11; declaring 3 classes is wrong.
    config = tiny(prepared, **{"data.label_map": None, "data.num_classes": 3,
                               "data.path": str(prepared)})
    with pytest.raises(DataError, match=r"label values must lie in \[0, 3\)"):
        finetune(config, tmp_path / "run", verbose=False)


def test_brats_data_is_scored_by_region(tmp_path, rng):
    from tests.data.helpers_nifti import write_brats

    write_brats(tmp_path / "brats", 6, rng, size=16)
    config = tiny(None, **{"data.prepared": None, "data.path": str(tmp_path / "brats"),
                           "steps": 2, "warmup_steps": 1})
    config["data"].pop("prepared")
    finetune(config, tmp_path / "run", verbose=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    row = metrics["cases"][0]
    for region in ("WT", "TC", "ET"):
        assert f"{region}_dice" in row and f"{region}_hd95" in row
    # BraTS label 4 is read as class 3: three named foreground classes, background unscored
    assert metrics["classes"]["3"] == "enhancing tumour"
    assert {"dice_peritumoral edema", "dice_enhancing tumour"} <= set(row)
    assert "dice_background" not in row


def test_a_model_keras_that_keras_refuses_is_a_data_error_naming_it(tmp_path):
    import keras

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(tmp_path / "model.keras")
    (tmp_path / "config.json").write_text(json.dumps({"scratch": True}))
    with pytest.raises(DataError) as info:
        load_finetuned(tmp_path)
    assert info.value.source == str(tmp_path / "model.keras")
    assert "Keras refuses it: Requested the deserialization of a `Lambda` layer" in str(info.value)
    assert "safe_mode=False" not in str(info.value)  # Keras's advice is not passed on
    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(DataError, match=r"model.keras: not a .keras zip file \(truncated"):
        load_finetuned(tmp_path)
