"""The SavedModel is both a TF Serving artifact and a reusable TF Hub module."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.errors import ExportError
from ssl3d_keras.export.savedmodel import (
    input_spec_of,
    read_saved_metadata,
    save_savedmodel,
    skips_model_of,
)
from ssl3d_keras.models import UNetEncoder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    encoder = UNetEncoder(input_channels=2, depth=2, base_filters=2, dropout=0.5)
    path = tmp_path_factory.mktemp("sm") / "savedmodel"
    save_savedmodel(encoder, path, metadata={"format": "test", "channels": 2})
    return encoder, path


def test_reusable_interface_matches_encoder(exported, rng):
    encoder, path = exported
    loaded = tf.saved_model.load(str(path))
    # Dynamic batch and spatial size: two different shapes through one export.
    for shape in [(1, 16, 16, 16, 2), (3, 8, 24, 16, 2)]:
        x = rng.normal(size=shape).astype(np.float32)
        np.testing.assert_allclose(loaded(x, training=False), encoder(x, training=False),
                                   atol=1e-5)
        skips = loaded.skips(x, training=False)
        reference = skips_model_of(encoder)(x, training=False)
        assert sorted(skips) == ["bottleneck", "features", "skip_1", "skip_2"]
        for key in reference:
            np.testing.assert_allclose(skips[key], reference[key], atol=1e-5)
    assert {id(v) for v in loaded.trainable_variables} <= {id(v) for v in loaded.variables}
    assert len(loaded.trainable_variables) == len(encoder.trainable_variables)
    assert len(loaded.variables) == len(encoder.variables)
    assert list(loaded.regularization_losses) == []


def test_training_trace_updates_batchnorm_statistics(exported, rng):
    _, path = exported
    loaded = tf.saved_model.load(str(path))
    moving = [v for v in loaded.variables if "moving_mean" in v.name]
    assert moving
    before = [v.numpy().copy() for v in moving]
    x = rng.normal(loc=3.0, size=(2, 16, 16, 16, 2)).astype(np.float32)
    eval_out = loaded(x, training=False).numpy()
    loaded(x, training=False)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, moving, strict=True))
    loaded(x, training=True)
    assert all(not np.array_equal(b, v.numpy()) for b, v in zip(before, moving, strict=True))
    # The moved statistics change the evaluation output.
    assert np.max(np.abs(loaded(x, training=False).numpy() - eval_out)) > 1e-4


def test_serving_signatures(exported, rng):
    encoder, path = exported
    loaded = tf.saved_model.load(str(path))
    assert set(loaded.signatures) == {"serving_default", "serving_skips"}
    serve = loaded.signatures["serving_default"]
    spec = serve.structured_input_signature[1]["inputs"]
    assert spec.shape.as_list() == [None, None, None, None, 2]
    x = rng.normal(size=(2, 8, 8, 8, 2)).astype(np.float32)
    np.testing.assert_allclose(serve(inputs=tf.constant(x))["features"],
                               encoder(x, training=False), atol=1e-5)
    assert read_saved_metadata(path) == {"format": "test", "channels": 2}


def test_regularization_losses_exported(tmp_path, rng):
    inputs = keras.Input((None, None, None, 1))
    conv = keras.layers.Conv3D(2, 3, padding="same", kernel_regularizer=keras.regularizers.L2(0.1))
    encoder = keras.Model(inputs, conv(inputs))
    save_savedmodel(encoder, tmp_path / "sm")
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    assert len(loaded.regularization_losses) == 1
    expected = 0.1 * np.sum(np.square(conv.kernel.numpy()))
    np.testing.assert_allclose(loaded.regularization_losses[0](), expected, rtol=1e-5)
    # Plain functional encoders (no skips) export without the skips callable.
    assert not hasattr(loaded, "skips") and "serving_skips" not in loaded.signatures


def test_atomic_replace_and_bad_encoder(tmp_path):
    encoder = UNetEncoder(input_channels=1, depth=1, base_filters=2)
    target = tmp_path / "sm"
    target.mkdir()
    (target / "stale.txt").write_text("old export")
    save_savedmodel(encoder, target)
    assert (target / "saved_model.pb").is_file() and not (target / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["sm"]  # no temp folders left

    class NoInputs(keras.layers.Layer):
        pass

    with pytest.raises(ExportError, match="exactly one input"):
        input_spec_of(NoInputs())
