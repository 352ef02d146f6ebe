"""UNetEncoder: architecture, shapes, errors, serialisation, mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.errors import ConfigError
from ssl3d_keras.models import UNetEncoder
from ssl3d_keras.models.dtype import dtype_policy


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


def _remat_step(remat, dropout, graph, dim=3, policy=None):
    keras.utils.set_random_seed(3)  # the same weights and dropout seeds for both settings
    encoder = UNetEncoder(dim=dim, depth=2, base_filters=4, dropout=dropout, remat=remat,
                          dtype=policy)
    x = tf.random.stateless_normal((2, *(16,) * dim, 1), seed=[1, 2])
    optimizer = keras.optimizers.SGD(0.1)

    def step():
        with tf.GradientTape() as tape:
            features = tf.cast(encoder(x, training=True), tf.float32)
            loss = tf.reduce_mean(tf.square(features - 0.5))
        grads = tape.gradient(loss, encoder.trainable_weights)
        optimizer.apply_gradients(zip(grads, encoder.trainable_weights, strict=True))
        return loss, grads

    loss, grads = (tf.function(step) if graph else step)()
    moving = {w.path: w.numpy() for w in encoder.non_trainable_weights}
    return float(loss), [g.numpy() for g in grads], moving


@pytest.mark.parametrize("dropout,graph", [(0.0, True), (0.5, True), (0.5, False)])
def test_remat_step_equals_the_plain_step(dropout, graph):
    # With dropout > 0 the recomputation draws the same masks, so it still matches.
    loss, grads, moving = _remat_step(False, dropout, graph)
    r_loss, r_grads, r_moving = _remat_step(True, dropout, graph)
    assert r_loss == pytest.approx(loss, rel=1e-5)
    for a, b in zip(grads, r_grads, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert r_moving.keys() == moving.keys() and any("moving_mean" in k for k in moving)
    for name, value in moving.items():  # BatchNorm updated once per step
        np.testing.assert_allclose(r_moving[name], value, rtol=1e-5, atol=1e-7, err_msg=name)


def test_remat_in_2d_and_mixed_precision():
    loss, grads, _ = _remat_step(False, 0.25, True, dim=2, policy="mixed_bfloat16")
    r_loss, r_grads, _ = _remat_step(True, 0.25, True, dim=2, policy="mixed_bfloat16")
    assert r_loss == pytest.approx(loss, rel=1e-5)
    for a, b in zip(grads, r_grads, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_remat_recomputes_the_blocks_in_the_backward_pass():
    def conv_ops(remat):
        encoder = UNetEncoder(depth=1, base_filters=2, dropout=0.0, remat=remat)

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(encoder(x, training=True))
            return tape.gradient(loss, encoder.trainable_weights)

        graph = step.get_concrete_function(tf.TensorSpec((1, 8, 8, 8, 1))).graph
        return sum(op.type == "Conv3D" for op in graph.get_operations())

    # 4 convolutions forward; with remat each runs again before its gradient
    assert conv_ops(False) == 4
    assert conv_ops(True) == 8


def test_remat_config_round_trip_and_inference_unchanged(rng):
    plain = UNetEncoder(depth=1, base_filters=2)
    remat = UNetEncoder(depth=1, base_filters=2, remat=True)
    assert remat.get_config()["remat"] is True and plain.get_config()["remat"] is False
    clone = UNetEncoder.from_config(remat.get_config())
    assert clone.remat is True
    # the same layers and weights: a remat encoder's weights load into a plain one
    assert [w.path for w in remat.weights] == [w.path for w in plain.weights]
    plain.set_weights(remat.get_weights())
    x = rng.normal(size=(1, 8, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(remat(x), plain(x))
    with pytest.raises(ConfigError) as info:
        UNetEncoder(depth=1, remat="yes")
    assert info.value.key == "remat"


def test_bfloat16_bottleneck_convolutions_compute_in_float32_where_inputs_can_be_tiny():
    def dtypes(**kwargs):
        encoder = UNetEncoder(depth=2, base_filters=2, **kwargs)
        return {name: encoder.get_layer(name).compute_dtype
                for name in ("level2_conv2", "bottleneck_conv1", "bottleneck_conv2",
                             "bottleneck_relu1")}

    bf16 = {"level2_conv2": "bfloat16", "bottleneck_conv1": "float32",
            "bottleneck_conv2": "float32", "bottleneck_relu1": "bfloat16"}
    # dynamic sizes, or a bottleneck input of 2 voxels (8 // 2**2): float32 convolutions
    assert dtypes(dtype="mixed_bfloat16") == bf16
    assert dtypes(dtype="mixed_bfloat16", input_size=(8, 16, 16)) == bf16
    # 12 // 4 = 3 voxels on every axis: safe, bfloat16 throughout
    assert set(dtypes(dtype="mixed_bfloat16", input_size=12).values()) == {"bfloat16"}
    assert set(dtypes().values()) == {"float32"}
    with dtype_policy("mixed_bfloat16"):  # the global policy counts too
        assert dtypes() == bf16
    encoder = UNetEncoder(depth=2, base_filters=2, dtype="mixed_bfloat16")
    assert encoder(np.zeros((1, 8, 8, 8, 1), "float32"), training=True).dtype == tf.bfloat16
