"""UNetEncoder: architecture, shapes, errors, serialisation, mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models import UNetEncoder


def hand_param_count(channels, dim, depth, base, bottleneck=None, norm_params=4):
    """Parameters of the encoder counted by hand: conv kernels + biases + norm."""
    widths = [base * 2**level for level in range(depth)] + [bottleneck or base * 2**depth]
    total, previous = 0, channels
    for width in widths:
        for c_in in (previous, width):
            total += 3**dim * c_in * width + width  # kernel + bias
            total += norm_params * width  # BN: gamma, beta, moving mean, moving var
        previous = width
    return total


def test_paper_encoder_parameter_count():
    encoder = UNetEncoder()  # built only, never run on a big input
    assert encoder.count_params() == hand_param_count(1, 3, 4, 16)
    assert encoder.count_params() == 3_537_424  # worked by hand: "about 3.54 M" in the paper
    assert encoder.min_input_size == 32
    widths = [layer.filters for layer in encoder.layers if isinstance(layer, keras.layers.Conv3D)]
    assert widths == [16, 16, 32, 32, 64, 64, 128, 128, 256, 256]


@pytest.mark.parametrize(
    "dim,norm,norm_params", [(3, "none", 0), (2, "group", 2), (2, "instance", 2), (3, "batch", 4)]
)
def test_parameter_count_other_configs(dim, norm, norm_params):
    encoder = UNetEncoder(input_channels=2, dim=dim, depth=2, base_filters=3, norm=norm)
    assert encoder.count_params() == hand_param_count(2, dim, 2, 3, norm_params=norm_params)


def test_group_and_instance_norm_layers():
    group = UNetEncoder(dim=2, depth=1, base_filters=16, norm="group")
    groups = {layer.name: layer.groups for layer in group.layers if "norm" in layer.name}
    assert groups["level1_norm1"] == 8 and groups["bottleneck_norm1"] == 8
    instance = UNetEncoder(dim=2, depth=1, base_filters=4, norm="instance")
    norms = [la for la in instance.layers if isinstance(la, keras.layers.GroupNormalization)]
    assert len(norms) == 4
    # groups=-1 resolves to one group per channel when built.
    assert all(layer.groups == layer.gamma.shape[0] for layer in norms)


def test_block_order_and_dropout():
    encoder = UNetEncoder(dim=2, depth=1, base_filters=2, dropout=0.25)
    names = [layer.name for layer in encoder.layers]
    level = names[names.index("level1_conv1") : names.index("level1_pool") + 1]
    assert level == [
        "level1_conv1", "level1_relu1", "level1_norm1", "level1_dropout",
        "level1_conv2", "level1_relu2", "level1_norm2", "level1_pool",
    ]  # fmt: skip
    assert encoder.get_layer("level1_dropout").rate == 0.25
    assert names[-1] == "final_pool"
    no_dropout = UNetEncoder(dim=2, depth=1, base_filters=2, dropout=0.0, final_pool=False)
    assert not any(
        "dropout" in n or n == "final_pool" for n in (la.name for la in no_dropout.layers)
    )


@pytest.mark.parametrize("final_pool", [True, False])
def test_output_shapes_dynamic_and_non_cubic(final_pool):
    encoder = UNetEncoder(
        depth=2, base_filters=2, bottleneck_filters=5, norm="none", final_pool=final_pool
    )
    s = 8 if final_pool else 4
    assert encoder.input_shape == (None, None, None, None, 1)
    for shape in [(16, 16, 16), (32, 16, 24)]:  # patches and a bigger, non-cubic volume
        out = encoder(np.zeros((2, *shape, 1), "float32"))
        assert tuple(out.shape) == (2, *(d // s for d in shape), 5)


def test_pyramid_and_skips_model_share_weights(rng):
    encoder = UNetEncoder(dim=2, depth=2, base_filters=2, norm="batch")
    assert set(encoder.pyramid_outputs) == {"skip_1", "skip_2", "bottleneck"}
    skips = encoder.skips_model()
    x = rng.normal(size=(2, 16, 16, 1)).astype("float32")
    out = skips(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "skip_1": (2, 16, 16, 2), "skip_2": (2, 8, 8, 4),
        "bottleneck": (2, 4, 4, 8), "features": (2, 2, 2, 8),
    }  # fmt: skip
    np.testing.assert_allclose(out["features"], encoder(x), rtol=1e-6)
    assert {id(w) for w in skips.weights} == {id(w) for w in encoder.weights}


def test_too_small_input_is_a_clear_error():
    encoder = UNetEncoder()
    message = (
        "input size 20 is smaller than 2**5 = 32 for a depth-4 encoder with final "
        "pooling. Received: input_shape=(20, 20, 20, 1)"
    )
    with pytest.raises(
        ConfigError, match=message.replace("*", r"\*").replace("(", r"\(").replace(")", r"\)")
    ):
        encoder(keras.Input((20, 20, 20, 1)))
    tiny = UNetEncoder(depth=1, base_filters=2)
    with pytest.raises(ValueError, match="input size 3 is smaller than 2\\*\\*2 = 4"):
        tiny(np.zeros((1, 8, 3, 8, 1), "float32"))
    with pytest.raises(ConfigError, match="input channel"):
        tiny(np.zeros((1, 8, 8, 8, 2), "float32"))
    with pytest.raises(ConfigError, match="rank 5"):
        tiny(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(ConfigError, match="input_size"):
        UNetEncoder(depth=1, input_size=(8, 2, 8))


def test_static_input_size():
    encoder = UNetEncoder(dim=2, depth=1, base_filters=2, input_size=(8, 12))
    assert encoder.input_shape == (None, 8, 12, 1)
    assert encoder.compute_output_shape((None, 8, 12, 1)) == (None, 2, 3, 4)


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"levels": 4}, "UNetEncoder.levels"),
        ({"norm": "layer"}, "norm"),
        ({"dim": 4}, "dim"),
        ({"depth": 0}, "depth"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as info:
        UNetEncoder(**kwargs)
    assert info.value.key == key


def test_config_round_trip_and_keras_file(tmp_path, rng):
    encoder = UNetEncoder(input_channels=2, dim=2, depth=2, base_filters=2, norm="group", dropout=0.1,
                          input_size=(16, 16), name="enc")  # fmt: skip
    config = encoder.get_config()
    clone = UNetEncoder.from_config(config)
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(encoder)
    assert serialized["registered_name"] == "ssl3d>UNetEncoder"
    x = rng.normal(size=(2, 16, 16, 2)).astype("float32")
    path = tmp_path / "encoder.keras"
    encoder.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, UNetEncoder) and loaded.get_config() == config
    np.testing.assert_allclose(loaded(x), encoder(x), rtol=1e-6, atol=1e-6)
    weights = tmp_path / "encoder.weights.h5"
    encoder.save_weights(weights)
    clone.load_weights(weights)
    np.testing.assert_allclose(clone(x), encoder(x), rtol=1e-6, atol=1e-6)


def test_training_changes_batchnorm_and_gradients_reach_every_weight(rng):
    encoder = UNetEncoder(depth=1, base_filters=2, dropout=0.5)
    x = tf.constant(rng.normal(size=(2, 8, 8, 8, 1)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(encoder(x, training=True) ** 2)
    grads = tape.gradient(loss, encoder.trainable_weights)
    assert all(g is not None for g in grads)
    # Evaluation is deterministic (dropout off), training is not.
    np.testing.assert_array_equal(encoder(x), encoder(x))


def test_graph_mode_dynamic_shapes():
    encoder = UNetEncoder(dim=2, depth=1, base_filters=2, norm="none")
    fn = tf.function(encoder, input_signature=[tf.TensorSpec((None, None, None, 1))])
    assert tuple(fn(tf.zeros((1, 12, 8, 1))).shape) == (1, 3, 2, 4)
    assert tuple(fn(tf.zeros((3, 4, 16, 1))).shape) == (3, 1, 4, 4)


@pytest.fixture
def mixed_bfloat16():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    yield
    keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_mixed_precision(mixed_bfloat16, norm, rng):
    encoder = UNetEncoder(depth=1, base_filters=2, norm=norm)
    x = tf.constant(rng.normal(size=(2, 8, 8, 8, 1)).astype("float32"))
    with tf.GradientTape() as tape:
        out = encoder(x, training=True)
        loss = tf.reduce_mean(tf.cast(out, tf.float32))
    assert out.dtype == tf.bfloat16
    assert all(w.dtype == "float32" for w in encoder.weights)
    assert all(g is not None for g in tape.gradient(loss, encoder.trainable_weights))
    assert np.isfinite(tf.cast(out, tf.float32).numpy()).all()


def test_dtype_policy_argument(rng):
    encoder = UNetEncoder(dim=2, depth=1, base_filters=2, dtype="mixed_bfloat16")
    out = encoder(rng.normal(size=(1, 8, 8, 1)).astype("float32"))
    assert out.dtype == tf.bfloat16
    clone = UNetEncoder.from_config(encoder.get_config())
    assert clone.get_layer("level1_conv1").dtype_policy.name == "mixed_bfloat16"
    assert "dtype" not in UNetEncoder(dim=2, depth=1, base_filters=2).get_config()
