"""Fine-tuning for whole-image grades (the paper's diabetic-retinopathy task).

The encoder's features are pooled and fed to a head (`softmax` over the grades,
or `ordinal`: one sigmoid per grade boundary, the cumulative encoding the
authors used for APTOS). Training takes random crops of `patch_size`; each test
image is predicted whole (zero-padded to the encoder's divisibility), and the
run reports the quadratic weighted kappa and accuracy over the test cases, the
APTOS 2019 metric.
"""

import csv

import numpy as np

from ssl3d_keras.atomic import atomic_path, write_json_atomic

__all__ = ["finetune_classifier"]


def _grade_table(dataset):
    import tensorflow as tf

    ids = sorted(dataset.cases)
    grades = [int(dataset.cases[i]["grade"]) for i in ids]
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(ids), tf.constant(grades, tf.int32)), -1)


def graded_batches(volumes, table, *, patch_size, batch_size, seed, start_batch, cache):
    """Endless `(image (batch, *patch, C), grade (batch,))` batches of random crops."""
    import tensorflow as tf

    from ssl3d_keras.data.pipeline import make_pipeline

    def pack(volume):
        image = volume["image"]
        grade = tf.cast(table.lookup(volume["case_id"]), tf.float32)
        return {"image": tf.concat([image, tf.fill(tf.shape(image[..., :1]), grade)], -1),
                "label": tf.zeros([0], tf.int32)}

    def split(packed, example_seed):
        del example_seed  # the crop is the only random choice
        flat = tf.reshape(packed[..., -1], [-1])
        return packed[..., :-1], tf.cast(tf.round(flat[0]), tf.int32)

    packed = volumes.map(pack, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return make_pipeline(packed, split, batch_size=batch_size, seed=seed, crop_size=patch_size,
                         cache=cache, start_batch=start_batch)


def _pad_to(image, multiple):
    pads = [((-n) % multiple // 2, (-n) % multiple - (-n) % multiple // 2)
            for n in image.shape[:-1]]
    return np.pad(image, [*pads, (0, 0)])


def predict_grades(forward, dataset, case_ids, *, head, divisible_by):
    """`(case_ids, true grades, predicted grades)` for whole images, one at a time.

    `forward` is `ssl3d_keras.downstream.evaluate.probability_fn(model)`.
    """
    from ssl3d_keras.downstream.dataset import iterate_cases
    from ssl3d_keras.downstream.models import decode_ordinal

    ids, truth, predicted = [], [], []
    for case_id, image, _ in iterate_cases(dataset, case_ids):
        output = forward(_pad_to(image, divisible_by)[None])[0]
        grade = int(decode_ordinal(output[None])[0]) if head == "ordinal" else int(
            np.argmax(output))
        ids.append(case_id)
        truth.append(int(dataset.cases[case_id]["grade"]))
        predicted.append(grade)
    return ids, np.array(truth), np.array(predicted)


def finetune_classifier(run, out_dir, *, verbose=True):
    """Train and score a grading model for a run set up by `finetune`.

    Args:
        run: the `StartedRun` of `ssl3d_keras.downstream.finetune`.
        out_dir: the run directory.
        verbose: progress and messages.

    Returns:
        The summary dict (also `summary.json`): `test` with `kappa` and
        `accuracy`, `best_step`, `best_validation_kappa`, `splits`, ...
    """
    import time

    from ssl3d_keras.downstream.dataset import case_volumes
    from ssl3d_keras.downstream.evaluate import probability_fn
    from ssl3d_keras.downstream.finetune import finish_run
    from ssl3d_keras.downstream.losses import make_classification_loss
    from ssl3d_keras.downstream.metrics import quadratic_weighted_kappa
    from ssl3d_keras.downstream.models import build_classification_model
    from ssl3d_keras.downstream.trainer import fit

    config, dataset, splits, info = run.config, run.dataset, run.splits, run.info
    model = build_classification_model(run.encoder, dataset.num_classes, head=config.head,
                                       dim=dataset.dim, input_channels=dataset.channels)
    loss_fn = make_classification_loss(config.head)
    table = _grade_table(dataset)
    patch = (config.patch_size,) * dataset.dim
    k = dataset.num_classes
    divisible = info["divisible_by"]

    def batches(start_batch):
        return graded_batches(case_volumes(dataset, splits.train), table, patch_size=patch,
                              batch_size=config.batch_size, seed=config.seed,
                              start_batch=start_batch, cache=config.data.cache)

    forward = probability_fn(model)  # traced once for every validation and the test

    def score(ids):
        _, truth, predicted = predict_grades(forward, dataset, ids, head=config.head,
                                             divisible_by=divisible)
        return quadratic_weighted_kappa(truth, predicted, num_classes=k)

    started = time.perf_counter()
    best = fit(model, loss_fn, batches, config, out_dir, resuming=run.resuming,
               validation=(splits.validation, score, "kappa"), verbose=verbose)
    ids, truth, predicted = predict_grades(forward, dataset, splits.test, head=config.head,
                                           divisible_by=divisible)
    rows = [{"case": c, "grade": int(t), "predicted": int(p)}
            for c, t, p in zip(ids, truth, predicted, strict=True)]
    test = {"kappa": quadratic_weighted_kappa(truth, predicted, num_classes=k),
            "accuracy": float(np.mean(truth == predicted)) if len(rows) else float("nan"),
            "n": len(rows)}
    write_json_atomic(out_dir / "metrics.json", {"cases": rows, "summary": test,
                                                 "grades": k}, allow_nan=True)
    with atomic_path(out_dir / "metrics.csv") as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["case", "grade", "predicted"])
        writer.writeheader()
        writer.writerows(rows)
    if verbose:
        print(f"Test quadratic weighted kappa {test['kappa']:.3f}, accuracy "
              f"{test['accuracy']:.3f} over {test['n']} case(s)", flush=True)
    summary = {"test": test, "splits": splits.as_dict(), "best_step": best["step"],
               "best_validation_kappa": best["score"] if best["step"] is not None else None,
               "encoder": info["source"], "steps": config.steps, "run_dir": str(out_dir),
               "train_wall_time_sec": time.perf_counter() - started}
    return finish_run(model, summary, out_dir, run.encoder)
