"""Feed NIfTI files to the readers in a child process and classify every outcome.

`run_corpus(paths)` starts `python -m tests.data.nifti_fuzz_worker` with an
address-space limit, so an allocation beyond the bound is a `MemoryError` (a
failure) instead of a machine brought to its knees. The child writes one JSON
line per file; when it dies (interpreter crash) or stops answering (hang), the
file it was on is recorded as such and a new child goes on with the next one.

Outcomes per file and reader: `loaded` (and the volume is sane: finite voxels,
finite affine, positive spacing, shape matching the header), `error` (one-line
`DataError` naming the file, nothing else printed), or a failure:
`traceback` (any other exception), `noisy` (the error came with log lines or
warnings), `insane` (loaded but the volume breaks an invariant), `hang`, `crash`.
"""

import logging
import sys
import time
import warnings

from ssl3d_keras.benchmark.memory import peak_rss_mb
from tests.data.fuzz_child import run_items, serve

READERS = ("load_nifti", "load_label", "read_header_shape")
FAILURES = ("traceback", "noisy", "insane", "hang", "crash")


def classify(path):
    """`{reader: outcome}` plus `seconds` and `detail` for one file (runs in the child)."""
    import numpy as np

    from ssl3d_keras.data import nifti
    from ssl3d_keras.errors import DataError

    result = {"path": str(path), "detail": {}}
    start = time.perf_counter()
    for reader in READERS:
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger().addHandler(handler)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = getattr(nifti, reader)(path)
            outcome = "loaded"
            problem = _insane(np, reader, out)
            if problem:
                outcome, result["detail"][reader] = "insane", problem
            if _foreign(caught, path):
                outcome = "noisy"
                result["detail"][reader] = str(_foreign(caught, path)[0].message)[:200]
        except DataError as e:
            outcome = "error"
            text = str(e)
            if "\n" in text or str(path) not in text or records or _foreign(caught, path):
                outcome = "noisy"
            result["detail"][reader] = text[:300]
        except BaseException as e:  # noqa: B036 - the point is to see everything
            outcome = "traceback"
            result["detail"][reader] = f"{type(e).__name__}: {str(e)[:200]}"
        finally:
            logging.getLogger().removeHandler(handler)
        if records and outcome in ("loaded", "error"):
            outcome = "noisy"
            result["detail"][reader] = records[0].getMessage()[:200]
        result[reader] = outcome
    result["seconds"] = time.perf_counter() - start
    result["maxrss_mb"] = peak_rss_mb()
    return result


def _foreign(caught, path):
    """Warnings other than one clear line naming the file (a library's, or multi-line)."""
    return [w for w in caught
            if not (str(w.message).startswith(f"{path}: ") and "\n" not in str(w.message))]


def _insane(np, reader, out):
    if reader == "read_header_shape":
        shape, n4 = out
        return None if min(shape) >= 2 and n4 >= 1 else f"shape {shape}, n4 {n4}"
    if reader == "load_nifti":
        array, affine, spacing = out.array, out.affine, out.spacing
    else:
        array, affine, spacing = out
    if not np.isfinite(array).all():
        return "non-finite voxels"
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) == 0:
        return f"affine {affine.tolist()}"
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        return f"spacing {spacing}"
    norms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if not np.allclose(norms, spacing, rtol=1e-5):
        return f"spacing {spacing} is not the affine's {norms.tolist()}"
    return None


def run_corpus(paths, *, address_space_gb=3.0, timeout=60.0):
    """Classify `paths` in child processes; returns one dict per path (in order)."""
    return run_items("tests.data.nifti_fuzz_worker", paths, READERS,
                     address_space_gb=address_space_gb, timeout=timeout,
                     timeout_env="NIFTI_FUZZ_TIMEOUT")


if __name__ == "__main__":
    serve(classify, float(sys.argv[1]), "NIFTI_FUZZ_TIMEOUT", 60)
