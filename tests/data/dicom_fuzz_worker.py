"""Feed DICOM folders to the readers in a child process and classify every outcome.

The DICOM twin of `tests/data/nifti_fuzz_worker.py` (same child process, address-space
limit, per-item alarm, one JSON line per item, `hang`/`crash` recorded and a new child
started). One item is a folder: `find_series(folder)` groups it, then every series found is
read by `load_series` and `read_series_shape`, and so are all the candidate files of the
folder together (a caller's list that mixes series).

Outcomes per folder and reader (the worst over its series): `loaded` (and the volume is
sane: finite voxels, finite non-singular affine, spacing its column norms and within
`nifti.VOXEL_SIZE_RANGE`, the shape `read_series_shape` gives), `error` (one-line
`DataError` naming a file of the series, nothing else printed), or a failure: `traceback`
(any other exception), `noisy` (log lines or warnings), `insane`, `hang`, `crash`.
"""

import logging
import sys
import time
import warnings
from pathlib import Path

from ssl3d_keras.benchmark.memory import peak_rss_mb
from tests.data.fuzz_child import run_items, serve

READERS = ("find_series", "load_series", "read_series_shape")
FAILURES = ("traceback", "noisy", "insane", "hang", "crash")
_RANK = {"loaded": 0, "error": 1, "noisy": 2, "insane": 3, "traceback": 4}


def classify(folder):
    """`{reader: outcome}` plus `seconds`, `series`, `detail` and the `digests` of the volumes
    that loaded, for one folder (runs in the child)."""
    from ssl3d_keras.data import dicom

    result = {"path": str(folder), "detail": {}, "series": 0}
    start = time.perf_counter()
    outcome, detail, found = _call(dicom.find_series, folder, [str(folder)])
    result["find_series"] = outcome
    if detail:
        result["detail"]["find_series"] = detail
    worst = {"load_series": "loaded", "read_series_shape": "loaded"}
    series = [files for _, files in found or []]
    # Every file of the folder as one series too, as a caller of load_series may pass them.
    everything = tuple(sorted(str(p) for p in Path(folder).rglob("*")
                              if p.is_file() and dicom.is_dicom_candidate(p)))
    if everything and everything not in series:
        series.append(everything)
    for files in series:
        result["series"] += 1
        outcome, detail, vol = _call(dicom.load_series, files, files)
        shape_outcome, shape_detail, shape = _call(dicom.read_series_shape, files, files)
        if outcome == "loaded":
            problem = _insane(vol, shape if shape_outcome == "loaded" else None)
            if problem:
                outcome, detail = "insane", problem
            result.setdefault("digests", []).append(digest(vol))
        for reader, (o, d) in (("load_series", (outcome, detail)),
                               ("read_series_shape", (shape_outcome, shape_detail))):
            if _RANK[o] > _RANK[worst[reader]]:
                worst[reader] = o
                result["detail"][reader] = d
            elif d and reader not in result["detail"] and o == worst[reader]:
                result["detail"][reader] = d
    result.update(worst)
    result["seconds"] = time.perf_counter() - start
    result["maxrss_mb"] = peak_rss_mb()
    return result


def _call(reader, argument, files):
    """(outcome, detail, value) of `reader(argument)`, its noise and errors classified."""
    from ssl3d_keras.errors import DataError

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    value, detail = None, None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = reader(argument)
        outcome = "loaded"
        if caught:
            outcome, detail = "noisy", str(caught[0].message)[:200]
    except DataError as e:
        text = str(e)
        outcome, detail = "error", text[:300]
        if "\n" in text or not any(f in text for f in files) or caught:
            outcome = "noisy"
    except BaseException as e:  # noqa: B036 - the point is to see everything
        outcome, detail = "traceback", f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        logging.getLogger().removeHandler(handler)
    if records and outcome in ("loaded", "error"):
        outcome, detail = "noisy", records[0].getMessage()[:200]
    return outcome, detail, value


def digest(vol):
    """A short hash of a volume's voxels and affine (rounded to 1e-4 mm), to compare loads."""
    import hashlib

    import numpy as np

    h = hashlib.sha256(np.ascontiguousarray(vol.array).tobytes())
    h.update(np.round(vol.affine, 4).tobytes())
    return h.hexdigest()[:16]


def _insane(vol, shape):
    import numpy as np

    from ssl3d_keras.data import nifti

    array, affine, spacing = vol.array, vol.affine, vol.spacing
    if array.dtype != np.float32 or array.ndim != 4 or array.shape[-1] != 1:
        return f"array {array.dtype} {array.shape}"
    if not np.isfinite(array).all():
        return "non-finite voxels"
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) == 0:
        return f"affine {affine.tolist()}"
    low, high = nifti.VOXEL_SIZE_RANGE
    if not all(np.isfinite(s) and low <= s <= high for s in spacing):
        return f"spacing {spacing}"
    if not np.allclose(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)), spacing, rtol=1e-5):
        return f"spacing {spacing} is not the affine's"
    if shape is not None and tuple(shape) != array.shape[:3]:
        return f"read_series_shape {shape}, loaded {array.shape[:3]}"
    return None


def run_folders(folders, *, address_space_gb=2.0, timeout=30.0):
    """Classify `folders` in child processes; returns one dict per folder (in order)."""
    return run_items("tests.data.dicom_fuzz_worker", folders, READERS,
                     address_space_gb=address_space_gb, timeout=timeout,
                     timeout_env="DICOM_FUZZ_TIMEOUT", failed_extra={"series": 0})


if __name__ == "__main__":
    serve(classify, float(sys.argv[1]), "DICOM_FUZZ_TIMEOUT", 30)
