"""Downstream models: U-Net decoder on any encoder, classifier heads, encoder freezing."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.downstream.losses import make_segmentation_loss
from ssl3d_keras.downstream.models import (
    build_classification_model,
    build_segmentation_model,
    decode_ordinal,
    decoder_variables,
    encoder_variables,
    ordinal_targets,
    probe_strides,
    set_encoder_trainable,
    trainable_variables_of,
)
from ssl3d_keras.errors import ConfigError, DataError
from ssl3d_keras.export.layer import SavedModelLayer
from ssl3d_keras.export.savedmodel import save_savedmodel
from ssl3d_keras.models import DenseNetEncoder
from ssl3d_keras.models.factory import build_encoder

TINY = {"depth": 2, "base_filters": 4, "bottleneck_filters": 6}


def _encoder(dim=3, **overrides):
    keras.utils.set_random_seed(7)
    return build_encoder({**TINY, **overrides}, input_channels=1, dim=dim)


def _ids(variables):
    return {id(v) for v in variables}


def test_probe_strides_of_unet_skips():
    encoder = _encoder(3)
    expected = {"skip_1": (1, 4), "skip_2": (2, 8), "bottleneck": (4, 6), "features": (8, 6)}
    assert probe_strides(encoder.skips_model(), dim=3, input_channels=1) == expected
    # A plain callable (no compute_output_spec) is probed eagerly on zeros, same answer.
    skips = encoder.skips_model()
    assert probe_strides(lambda x: skips(x), dim=3, input_channels=1) == expected


@pytest.mark.parametrize(
    "dim, sizes", [(3, [(16, 16, 16), (8, 12, 20)]), (2, [(32, 32), (16, 40)])]
)
def test_segmentation_full_resolution_softmax_dynamic(dim, sizes, rng):
    model = build_segmentation_model(_encoder(dim).skips_model(), 3, dim=dim, input_channels=1)
    assert model.divisible_by == 4
    for size in sizes:
        x = rng.normal(size=(2, *size, 1)).astype("float32")
        p = keras.ops.convert_to_numpy(model(x, training=False))
        assert p.shape == (2, *size, 3)
        assert p.dtype == np.float32
        assert np.all(p >= 0)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


def test_decoder_mirrors_encoder_filters_and_accepts_overrides():
    encoder = _encoder(3)
    model = build_segmentation_model(encoder, 2, dim=3, input_channels=1)
    # Coarsest first: up to skip_2's 8 channels, then to skip_1's 4.
    assert model.get_layer("decoder1_up").filters == 8
    assert model.get_layer("decoder1_conv2").filters == 8
    assert model.get_layer("decoder2_up").filters == 4
    assert model.get_layer("decoder2_concat").output.shape[-1] == 8  # 4 up + 4 skip
    assert model.get_layer("logits").filters == 2
    assert model.get_layer("probabilities").dtype_policy.compute_dtype == "float32"
    custom = build_segmentation_model(encoder, 2, dim=3, input_channels=1,
                                      decoder_filters=[5, 3], norm="group")
    assert [custom.get_layer(f"decoder{i}_conv1").filters for i in (1, 2)] == [5, 3]
    with pytest.raises(ConfigError, match="decoder_filters"):
        build_segmentation_model(encoder, 2, dim=3, input_channels=1, decoder_filters=[5])


def test_segmentation_rejects_bad_arguments():
    skips = _encoder(3).skips_model()
    with pytest.raises(ConfigError, match="num_classes=1"):
        build_segmentation_model(skips, 1, dim=3, input_channels=1)
    with pytest.raises(ConfigError, match="did you mean 'batch'"):
        build_segmentation_model(skips, 2, dim=3, input_channels=1, norm="batchnorm")


def test_encoder_weights_are_shared_not_copied(rng):
    encoder = _encoder(3)
    model = build_segmentation_model(encoder.skips_model(), 2, dim=3, input_channels=1)
    assert _ids(encoder.weights) == _ids(encoder_variables(model))
    assert _ids(encoder.weights) <= _ids(model.weights)
    assert not _ids(decoder_variables(model)) & _ids(encoder.weights)
    assert len(encoder_variables(model)) + len(decoder_variables(model)) == len(model.weights)
    x = rng.normal(size=(1, 16, 16, 16, 1)).astype("float32")
    before = keras.ops.convert_to_numpy(model(x, training=False))
    kernel = encoder.get_layer("level1_conv1").kernel
    kernel.assign(kernel.numpy() * 3.0)
    after = keras.ops.convert_to_numpy(model(x, training=False))
    assert np.max(np.abs(after - before)) > 1e-4


def _snapshot(variables):
    return [v.numpy().copy() for v in variables]


def _changed(before, variables):
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables, strict=True)]


def test_freezing_keeps_encoder_and_batchnorm_fixed_then_unfreezing_trains_it(rng):
    encoder = _encoder(3, dropout=0.0)
    skips = encoder.skips_model()
    model = build_segmentation_model(skips, 3, dim=3, input_channels=1)
    x = rng.normal(loc=1.0, size=(2, 16, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 3, size=(2, 16, 16, 16))
    loss = make_segmentation_loss("dice_ce", 3)
    enc_vars, dec_vars = encoder_variables(model), decoder_variables(model)
    assert any("moving_mean" in v.path for v in enc_vars)

    set_encoder_trainable(model, False)
    assert not _ids(trainable_variables_of(model)) & _ids(enc_vars)
    assert _ids(trainable_variables_of(model)) == _ids(v for v in dec_vars if v.trainable)
    # Frozen BatchNorm runs in inference mode: training=True changes nothing in the encoder.
    np.testing.assert_allclose(skips(x, training=True)["bottleneck"],
                               skips(x, training=False)["bottleneck"], atol=1e-6)
    model.compile(keras.optimizers.Adam(1e-2), loss)
    enc_before, dec_before = _snapshot(enc_vars), _snapshot(dec_vars)
    for _ in range(2):
        model.train_on_batch(x, y)
    assert not any(_changed(enc_before, enc_vars))  # bit-identical, moving statistics too
    assert any(_changed(dec_before, dec_vars))

    set_encoder_trainable(model, True)
    model.compile(keras.optimizers.Adam(1e-2), loss)  # fresh optimizer, as the paper's schedule
    assert _ids(v for v in enc_vars if v.trainable) <= _ids(trainable_variables_of(model))
    assert sum(v.trainable for v in enc_vars) == len(encoder.trainable_weights) > 0
    for _ in range(2):
        model.train_on_batch(x, y)
    changed = dict(zip([v.path for v in enc_vars], _changed(enc_before, enc_vars), strict=True))
    assert all(changed.values()), [k for k, c in changed.items() if not c]


def test_densenet_decoder_reaches_full_resolution():
    keras.utils.set_random_seed(3)
    encoder = DenseNetEncoder(input_channels=1, weights=None)
    model = build_segmentation_model(encoder.skips_model(), 2, dim=2, input_channels=1)
    assert model.divisible_by == 32
    # Four skips (strides 16..2) then one extra x2 stage at half the channels.
    ups = [model.get_layer(f"decoder{i}_up").filters for i in range(1, 6)]
    assert ups == [1024, 512, 256, 64, 32]
    assert "decoder5_concat" not in [layer.name for layer in model.layers]
    p = keras.ops.convert_to_numpy(model(np.zeros((1, 64, 64, 1), "float32"), training=False))
    assert p.shape == (1, 64, 64, 2)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)


def test_segmentation_on_savedmodel_layer_matches_keras_encoder(tmp_path, rng):
    encoder = _encoder(3)
    path = save_savedmodel(encoder, tmp_path / "savedmodel")
    layer = SavedModelLayer(path, output="skips")
    native = build_segmentation_model(encoder.skips_model(), 3, dim=3, input_channels=1)
    exported = build_segmentation_model(layer, 3, dim=3, input_channels=1)
    assert exported.divisible_by == 4
    assert _ids(encoder_variables(exported)) == _ids(layer.weights)
    native_dec, exported_dec = decoder_variables(native), decoder_variables(exported)
    assert [v.path for v in native_dec] == [v.path for v in exported_dec]
    for source, target in zip(native_dec, exported_dec, strict=True):
        target.assign(source)
    x = rng.normal(size=(2, 16, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(exported(x, training=False), native(x, training=False), atol=1e-5)

    # Frozen SavedModel encoder: no trainable weights, BatchNorm statistics untouched.
    set_encoder_trainable(exported, False)
    assert not _ids(trainable_variables_of(exported)) & _ids(layer.weights)
    exported.compile(keras.optimizers.Adam(1e-2), make_segmentation_loss("dice", 3))
    before = _snapshot(layer.weights)
    exported.train_on_batch(x, rng.integers(0, 3, size=(2, 16, 16, 16)))
    assert not any(_changed(before, layer.weights))


@pytest.mark.parametrize("dim", [2, 3])
def test_classification_softmax(dim, rng):
    encoder = _encoder(dim)
    model = build_classification_model(encoder, 3, hidden=8)
    size = (32,) * dim
    p = keras.ops.convert_to_numpy(model(rng.normal(size=(2, *size, 1)).astype("float32")))
    assert p.shape == (2, 3)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    assert _ids(encoder_variables(model)) == _ids(encoder.weights)
    set_encoder_trainable(model, False)
    assert not _ids(trainable_variables_of(model)) & _ids(encoder.weights)
    assert len(trainable_variables_of(model)) == 4  # hidden and output kernels and biases


def test_classification_ordinal_head(rng):
    model = build_classification_model(_encoder(2), 5, head="ordinal", hidden=8, dropout=0.0)
    assert model.output.shape == (None, 4)
    p = keras.ops.convert_to_numpy(model(rng.normal(size=(3, 32, 32, 1)).astype("float32")))
    assert p.shape == (3, 4)
    assert np.all((p > 0) & (p < 1))
    assert decode_ordinal(p).shape == (3,)


def test_classification_rejects_bad_arguments():
    encoder = _encoder(2)
    with pytest.raises(ConfigError, match="did you mean 'ordinal'"):
        build_classification_model(encoder, 5, head="ordnial")
    with pytest.raises(ConfigError, match="num_classes"):
        build_classification_model(encoder, 1)
    with pytest.raises(ConfigError, match="dim"):
        build_classification_model(lambda x: x, 3)


def test_ordinal_encoding_round_trip():
    assert ordinal_targets([0, 2, 4], 5).tolist() == [
        [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    grades = np.arange(5)
    targets = ordinal_targets(grades, 5)
    assert targets.shape == (5, 4) and targets.dtype == np.float32
    np.testing.assert_array_equal(decode_ordinal(targets), grades)
    # Soft probabilities decode by the count above 0.5.
    assert decode_ordinal(np.array([[0.9, 0.6, 0.4, 0.1], [0.2, 0.1, 0.0, 0.0]])).tolist() == [2, 0]
    # TensorFlow tensors (tf.data) give the same answer.
    tf_targets = ordinal_targets(tf.constant(grades), 5)
    np.testing.assert_array_equal(tf_targets.numpy(), targets)
    np.testing.assert_array_equal(decode_ordinal(tf_targets).numpy(), grades)
    with pytest.raises(DataError, match="grades"):
        ordinal_targets([0, 5], 5)


# Keras' own .keras writer on numpy 2, not ours.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_reloaded_model_still_finds_its_encoder(tmp_path, rng):
    model = build_segmentation_model(_encoder(3).skips_model(), 2, dim=3, input_channels=1)
    model.save(tmp_path / "segmentation.keras")
    reloaded = keras.models.load_model(tmp_path / "segmentation.keras")
    assert not hasattr(reloaded, "encoder_layer")  # found by type/name instead
    assert [v.path for v in encoder_variables(reloaded)] == [
        v.path for v in encoder_variables(model)]
    x = rng.normal(size=(1, 8, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(reloaded(x, training=False), model(x, training=False), atol=1e-6)
    set_encoder_trainable(reloaded, False)
    assert _ids(trainable_variables_of(reloaded)) == _ids(
        v for v in decoder_variables(reloaded) if v.trainable)


def test_probabilities_stay_float32_under_mixed_precision(rng):
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_segmentation_model(_encoder(3).skips_model(), 2, dim=3, input_channels=1)
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.get_layer("decoder1_conv1").compute_dtype == "bfloat16"
    p = model(rng.normal(size=(1, 8, 8, 8, 1)).astype("float32"), training=False)
    assert p.dtype == "float32"
    np.testing.assert_allclose(p.numpy().sum(-1), 1.0, atol=1e-5)
