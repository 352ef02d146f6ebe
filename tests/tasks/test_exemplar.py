"""Exemplar networks: triplet views, shared head, negatives, the memory bank and the loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras import tasks
from ssl3d_keras.errors import ConfigError
from ssl3d_keras.ops.augment import exemplar_augment, exemplar_augment_2d, fundus_augment
from ssl3d_keras.tasks.exemplar import ExemplarTask
from ssl3d_keras.testing import tasks as contract
from ssl3d_keras.training.checkpoints import RunCheckpoints
from tests.tasks.test_learning_b import train

TINY = {"depth": 1, "base_filters": 4, "dropout": 0.0, "norm": "none"}


def make_task(dim=3, **kwargs):
    shape = (16,) * dim + (1,)
    return tasks.get(
        "exemplar", input_shape=shape, encoder=dict(TINY), **{"embedding_size": 8, **kwargs}
    )


def random_volume(dim, seed=0):
    return np.random.default_rng(seed).normal(size=(16,) * dim + (1,)).astype(np.float32)


def batch_of(task, n):
    pairs = [task.transform(random_volume(task.dim, i), tf.constant([i, 9])) for i in range(n)]
    return tf.stack([p[0] for p in pairs]), tf.stack([p[1] for p in pairs])


def np_squared(a, b):
    return ((a.astype(np.float64) - b) ** 2).sum(axis=-1)


@pytest.mark.parametrize("dim", [3, 2])
def test_transform_is_augmented_view_then_original(dim):
    task = make_task(dim)
    volume = random_volume(dim)
    seed = tf.constant([5, 6])
    inputs, target = task.transform(volume, seed)
    assert inputs.shape == (2, *volume.shape) and inputs.dtype == tf.float32
    np.testing.assert_array_equal(inputs[1].numpy(), volume)
    # The old code's chains: the paper's 3D one, its albumentations one on images.
    chain = exemplar_augment if dim == 3 else exemplar_augment_2d
    np.testing.assert_array_equal(inputs[0].numpy(), chain(tf.constant(volume), seed).numpy())
    assert not np.array_equal(inputs[0].numpy(), volume)
    assert target.dtype == tf.int32 and target.shape == ()


def test_2d_can_use_the_volume_chain_and_fundus_augments_the_photograph_first():
    volume, seed = random_volume(2), tf.constant([5, 6])
    inputs, _ = make_task(2, augmentation="volume").transform(volume, seed)
    np.testing.assert_array_equal(inputs[0], exemplar_augment(tf.constant(volume), seed))
    task = make_task(2, augmentation="fundus")
    photo_seed, view_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    photo = fundus_augment(tf.constant(volume), photo_seed)
    inputs, _ = task.transform(volume, seed)
    np.testing.assert_array_equal(inputs[1], photo)
    np.testing.assert_array_equal(inputs[0], exemplar_augment_2d(photo, view_seed))
    # In evaluation the photograph is left as it is (the old validation generator).
    inputs, _ = task.transform(volume, seed, training=False)
    np.testing.assert_array_equal(inputs[1], volume)
    np.testing.assert_array_equal(inputs[0], exemplar_augment_2d(tf.constant(volume), view_seed))


def test_shared_head_embeds_unit_vectors_and_rolls_negatives():
    task = make_task()
    inputs, target = batch_of(task, 3)
    out = task(inputs, training=False)
    assert out.shape == (3, 3, 8) and out.dtype == tf.float32
    np.testing.assert_allclose(np.linalg.norm(out.numpy(), axis=-1), 1.0, rtol=1e-5)
    # negative of scan i = original of scan i - 1 (mod batch)
    np.testing.assert_array_equal(out[:, 2].numpy(), np.roll(out[:, 1].numpy(), 1, axis=0))
    # The positive is the shared head on the original alone.
    alone = task(inputs[1:2], training=False)
    np.testing.assert_allclose(alone[0, 1].numpy(), out[1, 1].numpy(), rtol=1e-5, atol=1e-6)


def test_loss_and_accuracy_match_numpy_triplets():
    task = make_task(margin=0.5)
    inputs, target = batch_of(task, 4)
    out = task(inputs, training=False).numpy()
    loss, accuracy = task.loss_and_accuracy(target, tf.constant(out))
    d_ap, d_an = np_squared(out[:, 0], out[:, 1]), np_squared(out[:, 0], out[:, 2])
    np.testing.assert_allclose(float(loss), np.maximum(0, d_ap - d_an + 0.5).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(accuracy), (d_ap < d_an).mean())
    assert task.chance_accuracy == 0.5


def test_hinge_switches_off_for_well_separated_unit_embeddings():
    task = make_task()
    # Hand-made unit embeddings: D(a, p) = 0.8, D(a, n) = 4 (off) and D(a, n) = 0.8 (on).
    a, p = [1.0, 0.0], [0.6, 0.8]
    triplets = tf.constant([[a, p, [-1.0, 0.0]], [a, p, [0.6, -0.8]]], tf.float32)
    loss, accuracy = task.loss_and_accuracy(tf.zeros([2], tf.int32), triplets)
    assert float(loss) == pytest.approx(0.5)  # (0 + 1) / 2
    loss_off, _ = task.loss_and_accuracy(tf.zeros([1], tf.int32), triplets[:1])
    assert float(loss_off) == 0.0
    # Accuracy counts D(a, p) < D(a, n) strictly: triplet 1 yes, triplet 2 a tie (no).
    assert float(accuracy) == 0.5


def test_semihard_negative_is_the_closest_other_original_beyond_the_positive():
    task = make_task(negatives="semihard")
    inputs, _ = batch_of(task, 6)
    out = task(inputs, training=False).numpy()
    anchors, originals = out[:, 0], out[:, 1]
    kinds = set()
    for i in range(6):
        d = np_squared(anchors[i][None], originals)
        d_ap = d[i]
        d[i] = np.nan  # not its own scan
        beyond = np.flatnonzero(d > d_ap)
        if beyond.size:
            expected, kinds = beyond[np.argmin(d[beyond])], kinds | {"semihard"}
        else:
            expected, kinds = np.nanargmax(d), kinds | {"farthest"}
        np.testing.assert_allclose(out[i, 2], originals[expected], rtol=1e-6)
    assert "semihard" in kinds


def test_semihard_falls_back_to_the_farthest_when_all_negatives_are_closer():
    task = make_task(negatives="semihard")
    anchor = tf.constant([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    # Positives far from their anchors: every other original is closer than the positive.
    positive = tf.constant([[-1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
    negative = task._pick_negatives(anchor, positive, positive).numpy()
    # Anchor 0 = (1, 0): others are (0, -1) and (0, 1), both at 2: argmax takes the first.
    np.testing.assert_array_equal(negative[0], [0.0, -1.0])
    # Anchor 1 = (0, 1): others (-1, 0) at 2 and (0, 1) at 0 -> farthest (-1, 0).
    np.testing.assert_array_equal(negative[1], [-1.0, 0.0])


def test_old_head_variant_has_three_sigmoid_heads_and_mean_squared_distance():
    task = make_task(head="old")
    inputs, target = batch_of(task, 3)
    out = task(inputs, training=False).numpy()
    assert ((out > 0) & (out < 1)).all()
    assert len(task.slot_heads) == 3
    loss, _ = task.loss_and_accuracy(target, tf.constant(out))
    d_ap = ((out[:, 0] - out[:, 1]) ** 2).mean(axis=-1)
    d_an = ((out[:, 0] - out[:, 2]) ** 2).mean(axis=-1)
    np.testing.assert_allclose(float(loss), np.maximum(0, d_ap - d_an + 1.0).mean(), rtol=1e-5)
    assert float(loss) > 0  # the old variant's hinge never switches off at margin 1


@pytest.mark.parametrize(
    "overrides",
    [{"head": "old"}, {"negatives": "semihard"}, {"pooling": "avg", "projection_units": (8,)},
     {"negatives": "bank", "bank_size": 4}, {"negatives": "bank", "head": "old"}],
)
def test_variants_pass_the_gradient_contract(overrides):
    task = contract.build_task("exemplar", 2, embedding_size=8, **overrides).build_from_example()
    volume = contract.make_volume(2)
    contract.check_all_weights_get_gradients(task, contract.make_batch(task, volume, n=3))


def test_avg_pooling_runs_on_2d():
    task = make_task(2, pooling="avg")
    inputs, target = batch_of(task, 2)
    out = task(inputs, training=True)
    assert out.shape == (2, 3, 8)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"pooling": "max"}, "pooling"),
        ({"negatives": "random"}, "negatives"),
        ({"head": "three"}, "head"),
        ({"embedding_size": 0}, "embedding_size"),
        ({"margin": -1.0}, "margin"),
        ({"head": "old", "projection_units": (4,)}, "projection_units"),
        ({"negatives": "bank", "bank_size": 0}, "bank_size"),
        ({"augmentation": "photo"}, "augmentation"),
        ({"augmentation": "fundus"}, "augmentation"),  # 2D only; make_task is 3D
    ],
)
def test_bad_arguments_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError) as info:
        make_task(**kwargs)
    assert info.value.key == key


# --- negatives from the whole dataset: the memory bank -----------------------------------


def bank_task(**kwargs):
    return make_task(negatives="bank", **{"bank_size": 5, **kwargs})


def scans(task, ids, step):
    """A batch of triplet inputs of the random volumes `ids`, augmented with seed `step`."""
    pairs = [task.transform(random_volume(task.dim, i), tf.constant([step, i])) for i in ids]
    return tf.stack([p[0] for p in pairs]), tf.stack([p[1] for p in pairs])


def test_bank_holds_the_last_originals_first_in_first_out():
    task = bank_task()
    assert float(np.abs(task.bank.numpy()).max()) == 0 and int(task.bank_pushed.numpy()) == 0
    pushed, prints = [], []
    for step, ids in enumerate([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]]):
        inputs, _ = scans(task, ids, step)
        task(inputs, training=True)
        pushed.append(inputs[:, 1].numpy())
        prints.append(task.fingerprints(inputs[:, 1]).numpy())
    expected = np.concatenate(pushed)[-5:]  # 12 pushed, the 5 newest kept, oldest first
    np.testing.assert_array_equal(task.bank.numpy(), expected)
    np.testing.assert_array_equal(
        expected, np.stack([random_volume(3, i) for i in [7, 8, 9, 0, 1]])
    )
    np.testing.assert_array_equal(task.bank_fingerprints.numpy(), np.concatenate(prints)[-5:])
    assert int(task.bank_pushed.numpy()) == 12
    # Evaluation passes neither push nor change the bank.
    task(scans(task, [2, 3, 4], 9)[0], training=False)
    np.testing.assert_array_equal(task.bank.numpy(), expected)
    assert int(task.bank_pushed.numpy()) == 12


def test_fingerprints_tell_scans_apart_and_ignore_the_view():
    task = bank_task()
    a, _ = scans(task, [0, 1, 0], 0)
    b, _ = scans(task, [0], 1)  # the same scan, another augmented view
    prints = task.fingerprints(tf.concat([a[:, 1], b[:, 1]], 0)).numpy()
    assert prints[0] == prints[2] == prints[3] and prints[0] != prints[1]


def embed(task, volumes):
    """The shared head's embedding of each volume (the positive slot of a (v, v) pair)."""
    return task(tf.stack([volumes, volumes], axis=1), training=False)[:, 1].numpy()


def test_bank_negatives_are_other_scans_drawn_at_random_and_encoded_afresh():
    task = bank_task(bank_size=6)
    first, _ = scans(task, [0, 1, 2], 0)
    out = task(first, training=True).numpy()
    # An empty bank: the in-batch negative (the previous scan's original).
    np.testing.assert_allclose(out[:, 2], np.roll(out[:, 1], 1, axis=0), rtol=1e-5, atol=1e-6)
    task(scans(task, [3, 4, 5], 1)[0], training=True)  # the bank: scans 0..5
    picks = {0: set(), 3: set(), 6: set()}
    for step in range(2, 14):
        inputs, _ = scans(task, [0, 3, 6], step)
        bank, stored = task.bank.numpy(), task.bank_fingerprints.numpy()
        own = task.fingerprints(inputs[:, 1]).numpy()
        drawn, found = task._draw_from_bank(tf.range(3), task.fingerprints(inputs[:, 1]))
        assert found.numpy().all()
        out = task(inputs, training=True).numpy()  # draws the same, then pushes
        # The negative is the current network's embedding of the drawn volume.
        np.testing.assert_allclose(out[:, 2], embed(task, drawn), rtol=1e-5, atol=1e-6)
        for row, scan in enumerate([0, 3, 6]):
            match = np.flatnonzero(np.all(bank == drawn[row].numpy(), axis=(1, 2, 3, 4)))
            assert match.size >= 1, "a drawn volume is a bank entry"
            assert (stored[match] != own[row]).all(), "never the anchor's own scan"
            picks[scan].add(float(stored[match[0]]))  # which scan it is
    assert all(len(p) >= 3 for p in picks.values()), picks  # random, not one fixed scan


def test_bank_config_round_trip():
    task = bank_task(bank_size=7, augmentation="volume")
    config = task.get_config()
    assert config["negatives"] == "bank" and config["bank_size"] == 7
    clone = ExemplarTask.from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(task))
    assert restored.bank.shape == (7, 16, 16, 16, 1) and restored.get_config() == config


def test_a_checkpoint_restores_the_bank_and_resume_is_exact(tmp_path):
    batches = [scans(make_task(), [3 * s % 8, (3 * s + 1) % 8, (3 * s + 2) % 8], s)
               for s in range(6)]

    def fresh():
        keras.utils.set_random_seed(0)
        task = bank_task(bank_size=4).build_from_example()
        optimizer = keras.optimizers.Adam(1e-2)
        optimizer.build(task.trainable_variables)
        return task, optimizer

    def run(task, optimizer, steps):
        step = tf.function(lambda x, y: task.optimization_step(x, y, optimizer))
        return [float(step(*batches[s])["loss"]) for s in steps]

    task, optimizer = fresh()
    straight = run(task, optimizer, range(6))

    task, optimizer = fresh()
    checkpoints = RunCheckpoints(tmp_path, task, optimizer, tf.Variable(0, dtype=tf.int64))
    first = run(task, optimizer, range(3))
    checkpoints.save(3)
    saved_bank = task.bank.numpy()
    task, optimizer = fresh()
    assert not np.array_equal(task.bank.numpy(), saved_bank)
    RunCheckpoints(tmp_path, task, optimizer, tf.Variable(0, dtype=tf.int64)).restore()
    np.testing.assert_array_equal(task.bank.numpy(), saved_bank)
    assert int(task.bank_pushed.numpy()) == 9
    resumed = first + run(task, optimizer, range(3, 6))
    np.testing.assert_allclose(resumed, straight, rtol=1e-6)


@pytest.mark.parametrize(
    "dim, steps", [(2, 60), pytest.param(3, 50, marks=pytest.mark.slow)], ids=["2d", "3d"]
)
def test_exemplar_bank_negatives_learn(dim, steps):
    # Measured with in-batch negatives: bank entries are stale embeddings of training
    # scans, and the held-out batch must be scored the same way before and after.
    task, before, after = train("exemplar", dim, steps=steps, batch_size=8, held_out=32,
                                learning_rate=1e-3, embedding_size=32, negatives="bank",
                                bank_size=32, held_out_negatives="batch")
    assert int(task.bank_pushed.numpy()) == steps * 8
    assert after[0] < 0.8 * before[0], (before, after)
    assert after[1] >= 0.75 > task.chance_accuracy, (before, after)
