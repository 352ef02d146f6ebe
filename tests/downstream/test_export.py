"""Export of a fine-tuning run: the whole model for serving and the fine-tuned encoder."""

import json

import numpy as np
import tensorflow as tf

from ssl3d_keras.downstream.export import export_finetuned
from ssl3d_keras.downstream.finetune import finetune, load_finetuned


def test_the_served_model_equals_the_fine_tuned_one(tmp_path):
    config = {"scratch": True, "scratch_encoder": {"depth": 2, "base_filters": 4, "dropout": 0.0},
              "steps": 2, "batch_size": 2, "patch_size": 16,
              "evaluation": {"validate_every": 0, "write_predictions": False},
              "data": {"phantoms": {"n": 6, "size": 24}}}
    finetune(config, tmp_path / "run", verbose=False)
    written = export_finetuned(tmp_path / "run", tmp_path / "export", formats="preset")

    model, _ = load_finetuned(tmp_path / "run")
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 24, 1)).astype("float32")
    served = tf.saved_model.load(written["model"]).signatures["serving_default"]
    output = next(iter(served(tf.constant(x)).values())).numpy()
    np.testing.assert_allclose(output, model(x, training=False).numpy(), atol=1e-5)

    meta = json.loads((tmp_path / "export" / "finetune.json").read_text())
    assert meta["num_classes"] == 5 and meta["divisible_by"] == 4 and meta["window"] == 16
    assert meta["class_names"]["4"] == "lesion"

    from ssl3d_keras.downstream.models import encoder_variables
    from ssl3d_keras.export.loader import load_encoder

    encoder = load_encoder(tmp_path / "export" / "encoder" / "preset")
    fine_tuned = sorted((v.numpy() for v in encoder_variables(model)), key=np.size)
    exported = sorted((w.numpy() for w in encoder.weights), key=np.size)
    assert len(fine_tuned) == len(exported)
    for a, b in zip(fine_tuned, exported, strict=True):
        np.testing.assert_array_equal(np.sort(a, axis=None), np.sort(b, axis=None))

    # The export folder is one run's, whole: marked complete, and replaced at once by a re-export.
    from ssl3d_keras.export.folder import read_marker

    marker = read_marker(tmp_path / "export")
    assert marker["formats"] == ["model", "keras", "encoder"]
    assert {"model.keras", "finetune.json", "encoder/export.json"} <= set(marker["files"])
    export_finetuned(tmp_path / "run", tmp_path / "export", formats="preset")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "run"]
    assert read_marker(tmp_path / "export")["files"].keys() == marker["files"].keys()
