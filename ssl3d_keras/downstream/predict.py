"""Apply a fine-tuned segmentation model to new scans, writing NIfTI on each scan's own grid.

Each scan goes through the preprocessing its model was trained with (read from
the run's prepared manifest: reorientation, spacing, normalisation, crop, pad),
is predicted whole with sliding windows, and the label map is resampled back
(nearest neighbour) to the scan file's grid and affine, so it overlays the scan
in any viewer.

Example:

>>> from ssl3d_keras.downstream.predict import predict_dataset
>>> written = predict_dataset("runs/ft-rot", "new_scans/", "predictions/")  # doctest: +SKIP
"""

from pathlib import Path

import numpy as np

from ssl3d_keras.errors import DataError

__all__ = ["predict_dataset"]


def _case_name(case_id):
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in case_id)


def predict_dataset(run_dir, data, out_dir, *, layout="auto", on_error="fail", progress=None):
    """Predict every case of a dataset with the fine-tuned model of `run_dir`.

    Args:
        run_dir: a finished `ssl3d finetune` run (with `model.keras`).
        data: a NIfTI file, a folder of NIfTI volumes, or a Decathlon / BraTS /
            CSV dataset (labels, if any, are ignored).
        out_dir: folder for `<case>.nii.gz` predictions.
        layout: dataset layout ("auto" detects it).
        on_error: "fail" raises on the first unreadable case; "skip" reports
            it in the returned list and goes on.
        progress: optional `callback(done, total, case_id)`.

    Returns:
        list of dicts: `case`, `source`, `prediction` (path) or `error`.

    Raises:
        DataError: the run is not finished, the data cannot be read, or a scan
            has another channel count than the model.
    """
    from ssl3d_keras.config import from_dict
    from ssl3d_keras.data.layouts import discover
    from ssl3d_keras.data.preprocess import PreprocessConfig, preprocess
    from ssl3d_keras.downstream.evaluate import predict_case, probability_fn
    from ssl3d_keras.downstream.finetune import MODEL_FACTS, load_finetuned
    from ssl3d_keras.downstream.geometry import write_prediction
    from ssl3d_keras.training.checkpoints import read_json

    model, config = load_finetuned(run_dir)
    # The run keeps its own copy of the preprocessing, so it predicts after its data moved.
    record = dict(read_json(Path(run_dir) / "preprocessing.json"))
    for key in ("layout", "discover"):
        record.pop(key, None)
    preprocess_config = from_dict(PreprocessConfig, record, "preprocessing")
    facts = read_json(Path(run_dir) / MODEL_FACTS)
    channels, window, divisible = facts["input_channels"], facts["window"], facts["divisible_by"]

    data = Path(data)
    if data.is_file() and data.name.endswith((".nii", ".nii.gz")):
        from ssl3d_keras.data.sources import Case, VolumeSource

        case = Case(case_id=_case_name(data.name.split(".nii")[0]), images=(str(data),))
        source = VolumeSource("folder", data.parent, [case], (), None)
    else:
        source = discover(data, layout=layout)
    forward = probability_fn(model)
    out_dir = Path(out_dir)
    results = []
    for done, case in enumerate(source.cases, start=1):
        try:
            loaded = source.load(case)
            if loaded.image.shape[-1] != channels:
                raise DataError(loaded.sources[0], f"has {loaded.image.shape[-1]} channel(s); "
                                f"the model takes {channels}")
            image, _, info = preprocess(loaded.image, None, loaded.spacing, preprocess_config,
                                        affine=loaded.affine, case_id=case.case_id)
            probabilities = predict_case(model, image, dim=config.data.dim, window=window,
                                         overlap=config.evaluation.overlap,
                                         batch_size=config.evaluation.batch_size,
                                         blend=config.evaluation.blend, divisible_by=divisible,
                                         slice_axis=config.data.slice_axis, forward=forward)
            label = np.argmax(probabilities, axis=-1).astype(np.int32)
            path = write_prediction(out_dir / f"{_case_name(case.case_id)}.nii.gz", label,
                                    np.asarray(info["affine"]), _source_grid(loaded))
            results.append({"case": case.case_id, "source": loaded.sources[0],
                            "prediction": str(path)})
        except DataError as e:
            if on_error == "fail":
                raise
            results.append({"case": case.case_id, "source": list(case.images), "error": str(e)})
        if progress is not None:
            progress(done, len(source.cases), case.case_id)
    return results


def _source_grid(loaded):
    """Where the prediction goes: the NIfTI source file's stored grid, else the loaded grid."""
    first = str(loaded.sources[0])
    if first.endswith((".nii", ".nii.gz")):
        return first
    return loaded.image.shape[:3], loaded.affine
