"""Score a segmentation model on whole cases: sliding windows, per-case and per-class metrics.

Each case is predicted whole (windows with Gaussian blending, padded to the
encoder's divisibility), never as random crops as the old code did, and scored
per class with the background left out: Dice and the 95th percentile Hausdorff
distance in mm (from the prepared voxel spacing), plus the BraTS regions on
BraTS data. A 2D model predicts the same 3D cases slice by slice, so 2D and 3D
methods are scored on identical volumes.
"""

import math

import numpy as np

__all__ = ["predict_case", "evaluate_cases", "case_row"]


def probability_fn(model):
    """`f(batch) -> probabilities` for numpy batches, traced once per window shape."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def forward(batch):
        return model(batch, training=False)

    return lambda batch: forward(tf.convert_to_tensor(batch, tf.float32)).numpy()


def predict_case(model, image, *, dim, window, overlap=0.5, batch_size=4, blend="gaussian",
                 divisible_by=1, slice_axis=0, forward=None):
    """Class probabilities of one whole case.

    Args:
        model: a segmentation `keras.Model` `(batch, *window, C)` ->
            `(batch, *window, K)` probabilities (3D, or 2D with `dim=2`).
        image: float32 `(D, H, W, C)`.
        dim: 3 for a 3D model, 2 for a slice-wise model.
        window: int, window edge.
        overlap, batch_size, blend: sliding-window settings.
        divisible_by: the encoder's divisibility (windows are padded to it).
        slice_axis: the slicing axis of a 2D model.
        forward: optional cached `probability_fn(model)`.

    Returns:
        float32 `(D, H, W, K)`.
    """
    from ssl3d_keras.downstream.inference import slicewise_predict, sliding_window_predict

    forward = forward or probability_fn(model)
    if dim == 3:
        return sliding_window_predict(image, forward, window=window, overlap=overlap,
                                      batch_size=batch_size, blend=blend,
                                      divisible_by=divisible_by)
    return slicewise_predict(image, forward, slice_axis=slice_axis, batch_size=batch_size * 4,
                             window=window, overlap=overlap, divisible_by=divisible_by)


def case_row(case_id, scores):
    """Flatten one case's scores into a CSV-ready row.

    Columns: `case`, `dice_<class>`, `hd95_<class>` for each foreground class,
    the means over the classes (`dice_mean`, `hd95_mean`, NaN ignored), and
    `<region>_dice` / `<region>_hd95` for regions.
    """
    row = {"case": case_id}
    dice = scores["dice"]
    hd95 = scores["hd95"]
    for key in dice:
        row[f"dice_{key}"] = float(dice[key])
        row[f"hd95_{key}"] = float(hd95[key])
    row["dice_mean"] = _nanmean(list(dice.values()))
    row["hd95_mean"] = _nanmean(list(hd95.values()))
    for region, values in (scores.get("regions") or {}).items():
        row[f"{region}_dice"] = float(values["dice"])
        row[f"{region}_hd95"] = float(values["hd95"])
    return row


def _nanmean(values):
    finite = [float(v) for v in values if not math.isnan(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


def evaluate_cases(model, dataset, case_ids, *, dim, window, evaluation, divisible_by=1,
                   slice_axis=0, predictions_dir=None, progress=None, forward=None):
    """Predict and score whole cases.

    Args:
        model: the segmentation model.
        dataset: a `LabelledDataset`.
        case_ids: the cases to score.
        dim: 3 or 2 (slice-wise).
        window: window edge.
        evaluation: an `EvaluationConfig` (overlap, batch size, blend).
        divisible_by: the encoder's divisibility.
        slice_axis: slicing axis of a 2D model.
        predictions_dir: folder to write each prediction to, as NIfTI on the
            case's source file grid (`<case>.nii.gz`), or None.
        progress: optional `callback(done, total, case_id)`.
        forward: optional `probability_fn(model)`, reused across calls so that
            repeated validation does not trace the model again.

    Returns:
        list of row dicts (see `case_row`), in the order the cases are read.
    """
    from ssl3d_keras.downstream.dataset import iterate_cases
    from ssl3d_keras.downstream.metrics import segmentation_scores

    forward = forward or probability_fn(model)
    classes = list(range(1, dataset.num_classes))
    names = {c: dataset.class_names.get(c, str(c)) for c in classes}
    rows = []
    for done, (case_id, image, label) in enumerate(iterate_cases(dataset, case_ids), start=1):
        probabilities = predict_case(model, image, dim=dim, window=window,
                                     overlap=evaluation.overlap,
                                     batch_size=evaluation.batch_size, blend=evaluation.blend,
                                     divisible_by=divisible_by, slice_axis=slice_axis,
                                     forward=forward)
        prediction = np.argmax(probabilities, axis=-1).astype(np.int32)
        scores = segmentation_scores(prediction, label, classes=classes,
                                     spacing=dataset.spacing(case_id), class_names=names,
                                     brats=dataset.regions == "brats")
        rows.append(case_row(case_id, scores))
        if predictions_dir is not None:
            write_case_prediction(predictions_dir, dataset, case_id, prediction)
        if progress is not None:
            progress(done, len(case_ids), case_id)
    return rows


def write_case_prediction(folder, dataset, case_id, prediction):
    """Write a prepared-grid prediction back on its source file's grid; returns the path."""
    from pathlib import Path

    from ssl3d_keras.downstream.geometry import write_prediction

    entry = dataset.cases[case_id]
    source = entry["sources"][0]
    if not str(source).endswith((".nii", ".nii.gz")) and "source_affine" in entry:
        source = (entry["original_shape"][:3], entry["source_affine"])  # a DICOM series
    affine = np.asarray(entry["affine"], dtype=np.float64)
    path = Path(folder) / f"{case_id}.nii.gz"
    return write_prediction(path, prediction, affine, source)
