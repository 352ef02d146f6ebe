import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from ssl3d_keras.data.phantoms import make_phantom
from ssl3d_keras.data.pipeline import make_pipeline
from ssl3d_keras.data.shards import MANIFEST_FORMAT, ShardWriter, write_manifest
from ssl3d_keras.data.volumes import phantom_volumes, shard_volumes
from ssl3d_keras.errors import ConfigError


def noisy_transform(image, seed):
    """A random transform: the output depends on the seed, the target is the seed itself."""
    return image + tf.random.stateless_normal(tf.shape(image), seed), seed


def batches(dataset, n):
    return [tuple(np.asarray(x) for x in batch) for batch in dataset.take(n)]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v)


def write_shards(out_dir, n, size=12, channels=2, per_shard=2, with_label=True):
    cases = []
    with ShardWriter(out_dir, examples_per_shard=per_shard) as writer:
        for i in range(n):
            image, label = make_phantom((7, i), size=size, channels=channels)
            shard = writer.write(f"case_{i}", image, label if with_label else None)
            cases.append({"id": f"case_{i}", "final_shape": [size] * 3, "shard": shard})
    write_manifest(out_dir, {"format": MANIFEST_FORMAT, "dim": 3, "channels": channels,
                             "shards": writer.shards, "cases": cases})
    return out_dir


@pytest.fixture(scope="module")
def volumes():
    return phantom_volumes(5, size=12, channels=2, seed=3).cache()


def test_same_seed_same_batches_other_seed_differs(volumes):
    kwargs = dict(batch_size=3, crop_size=8, crops_per_volume=2, shuffle_volumes=4)
    a = batches(make_pipeline(volumes, noisy_transform, seed=1, **kwargs), 6)
    b = batches(make_pipeline(volumes, noisy_transform, seed=1, **kwargs), 6)
    c = batches(make_pipeline(volumes, noisy_transform, seed=2, **kwargs), 6)
    assert_same(a, b)
    assert all(x[0].shape == (3, 8, 8, 8, 2) for x in a)
    assert not np.allclose(a[0][0], c[0][0])
    seeds = np.concatenate([x[1] for x in a])
    assert len({tuple(s) for s in seeds}) == len(seeds)  # every example has its own seed


def test_epochs_are_different_permutations_of_all_volumes(volumes):
    ids = make_pipeline(volumes.map(lambda v: {**v, "image": tf.strings.to_number(
        tf.strings.substr(v["case_id"], 8, 3)) + tf.zeros([1])}), None, batch_size=5, seed=0)
    epochs = [sorted(b[0][:, 0].tolist()) for b in batches(ids, 3)]
    orders = [b[0][:, 0].tolist() for b in batches(ids, 3)]
    assert all(e == [0, 1, 2, 3, 4] for e in epochs)
    assert len({tuple(o) for o in orders}) > 1


@pytest.mark.parametrize("global_seed", [0, 7])
def test_volume_order_ignores_tensorflows_global_seed(volumes, global_seed):
    kwargs = dict(batch_size=5, seed=0, shuffle_volumes=5)
    ids = volumes.map(lambda v: {**v, "image": tf.strings.to_number(
        tf.strings.substr(v["case_id"], 8, 3)) + tf.zeros([1])})
    before = [b[0][:, 0].tolist() for b in batches(make_pipeline(ids, None, **kwargs), 3)]
    try:
        # Global seed 0 used to crash Dataset.shuffle with a tensor seed; others changed the order.
        tf.random.set_seed(global_seed)
        after = [b[0][:, 0].tolist() for b in batches(make_pipeline(ids, None, **kwargs), 3)]
    finally:
        tf.random.set_seed(None)
    assert before == after


@pytest.mark.parametrize("start_batch", [1, 7, 9])  # 9: skips a whole epoch
def test_start_batch_continues_the_stream_without_transforming_skipped(volumes, start_batch):
    kwargs = dict(batch_size=2, seed=5, crop_size=(6, 8, 10), crops_per_volume=3,
                  shuffle_volumes=3)
    full = batches(make_pipeline(volumes, noisy_transform, **kwargs), start_batch + 3)
    seen = []

    def recording(image, seed):
        seed = tf.numpy_function(lambda s: seen.append(tuple(s)) or s, [seed], tf.int32)
        return noisy_transform(image, tf.ensure_shape(seed, [2]))

    resumed = batches(make_pipeline(volumes, recording, start_batch=start_batch, **kwargs), 3)
    assert_same(full[start_batch:], resumed)
    skipped = {tuple(s) for batch in full[:start_batch] for s in batch[1]}
    assert seen and not skipped & set(seen)


def test_crops_cut_image_and_label_at_the_same_place():
    image, label = make_phantom((3, 0), size=12, channels=2)
    one = tf.data.Dataset.from_tensors({"image": image, "label": label})
    pairs = batches(make_pipeline(one, None, batch_size=1, crop_size=5, seed=9), 4)
    windows = np.lib.stride_tricks.sliding_window_view(image, (5, 5, 5, 2))[..., 0, :, :, :, :]
    for crop, crop_label in pairs:
        hits = np.argwhere((windows == crop[0]).all(axis=(-4, -3, -2, -1)))
        assert len(hits) == 1
        x, y, z = hits[0]
        np.testing.assert_array_equal(crop_label[0], label[x:x + 5, y:y + 5, z:z + 5])


def test_small_volumes_are_padded_to_the_crop():
    one = tf.data.Dataset.from_tensors({"image": tf.ones([4, 9, 3]), "label": tf.zeros([0], tf.int32)})
    (image, label), = batches(make_pipeline(one, None, batch_size=1, crop_size=6), 1)
    assert image.shape == (1, 6, 6, 3) and label.shape == (1, 0)
    assert image[0, :, :, 0].sum() == 4 * 6  # 4 rows of ones, padded to 6; 6 of 9 columns


def test_one_epoch_without_repeat_and_remainder():
    volumes = phantom_volumes(3, size=8, seed=0)
    kept = batches(make_pipeline(volumes, None, batch_size=2, repeat=False), 10)
    assert len(kept) == 1
    every = batches(make_pipeline(volumes, None, batch_size=2, repeat=False,
                                  drop_remainder=False), 10)
    assert [b[0].shape[0] for b in every] == [2, 1]


@pytest.mark.parametrize("kwargs,key", [({"batch_size": 0}, "batch_size"),
                                        ({"batch_size": 2, "start_batch": -1}, "start_batch"),
                                        ({"batch_size": 2, "crop_size": (4, 4)}, "crop_size"),
                                        ({"batch_size": 2, "crops_per_volume": 0},
                                         "crops_per_volume")])
def test_bad_pipeline_arguments(volumes, kwargs, key):
    with pytest.raises(ConfigError, match=key):
        make_pipeline(volumes, None, **kwargs)


def test_pipeline_over_shards_is_deterministic(tmp_path):
    write_shards(tmp_path, 4)
    a = batches(make_pipeline(shard_volumes(tmp_path), noisy_transform, batch_size=2,
                              crop_size=8, seed=3), 5)
    b = batches(make_pipeline(shard_volumes(tmp_path), noisy_transform, batch_size=2,
                              crop_size=8, seed=3, start_batch=2), 3)
    assert_same(a[2:], b)


DISTRIBUTED = textwrap.dedent("""
    import gc
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from ssl3d_keras.data.pipeline import make_pipeline, open_volumes

    def transform(image, seed):
        return image + tf.random.stateless_normal(tf.shape(image), seed), seed

    def dataset_fn(context):
        volumes = open_volumes(None, phantoms=dict(n=4, size=10), input_context=context)
        return make_pipeline(volumes, transform, batch_size=context.get_per_replica_batch_size(4),
                             crop_size=6, seed=11, input_context=context)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    context = tf.distribute.InputContext(1, 0, 2)
    single = iter(dataset_fn(context))
    for step in range(3):
        replicas = strategy.experimental_local_results(next(iterator))
        for replica in replicas:
            expected = next(single)  # replicas of one input pipeline take its batches in turn
            for got, want in zip(replica, expected):
                np.testing.assert_array_equal(got.numpy(), want.numpy())
    print("distributed ok", flush=True)
    # Close the endless iterators before exit: with both alive, TF 2.21 can hang at
    # interpreter shutdown (their numpy_function threads wait on the finalising interpreter).
    del iterator, single
    gc.collect()
""")


@pytest.mark.subprocess
def test_pipeline_under_mirrored_strategy_with_two_logical_cpus():
    result = subprocess.run([sys.executable, "-c", DISTRIBUTED], capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed ok" in result.stdout


def test_cases_smaller_than_the_crop_are_named():
    from ssl3d_keras.data.pipeline import cases_smaller_than

    manifest = {"dim": 3, "cases": [{"id": "big", "final_shape": [40, 40, 40, 1]},
                                    {"id": "thin", "final_shape": [40, 40, 20, 2]}]}
    assert cases_smaller_than(manifest, (32, 32, 32)) == ["thin"]
    assert cases_smaller_than(manifest, (16, 16, 16)) == []
    # 2D slices along axis 2 see only the first two axes.
    assert cases_smaller_than(manifest, (32, 32), dim=2, slice_axis=2) == []
    assert cases_smaller_than(manifest, (32, 32), dim=2, slice_axis=0) == ["thin"]


def test_the_config_value_auto_is_not_taken_for_a_cache_file():
    from ssl3d_keras.errors import ConfigError

    volumes = phantom_volumes(2, size=16)
    with pytest.raises(ConfigError, match="resolve the config value 'auto'"):
        make_pipeline(volumes, None, batch_size=1, cache="auto")
