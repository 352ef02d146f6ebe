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

import json
import logging
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

READERS = ("load_nifti", "load_label", "read_header_shape")
FAILURES = ("traceback", "noisy", "insane", "hang", "crash")
ROOT = Path(__file__).resolve().parents[2]


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


def peak_rss_mb():
    """Peak resident memory of this process since it started (exec), in MB.

    `/proc/self/status` VmHWM, not `getrusage`: Linux keeps `ru_maxrss` across
    `execve`, so a child forked from a large test process (TensorFlow loaded)
    would report its parent's size.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    paths = [str(p) for p in paths]
    results = []
    while len(results) < len(paths):
        todo = paths[len(results):]
        command = [sys.executable, "-m", "tests.data.nifti_fuzz_worker", str(address_space_gb)]
        env = {**os.environ, "NIFTI_FUZZ_TIMEOUT": str(timeout)}
        try:
            # The child's own alarm catches a hang in Python; this one a hang in C code.
            proc = subprocess.run(command, input="\n".join(todo), capture_output=True,
                                  text=True, cwd=ROOT, env=env,
                                  timeout=30 + 2 * timeout + 5 * len(todo))
            stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            stdout, stderr, code = _text(e.stdout), "TIMEOUT " + _text(e.stderr), -9
        done = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        results.extend(done)
        if len(done) < len(todo):  # the child died on the next file
            kind = "hang" if "TIMEOUT" in stderr else "crash"
            failed = {"path": todo[len(done)], "seconds": None, "maxrss_mb": None,
                      "detail": {"all": f"exit {code}: {stderr[-300:]}"}}
            failed.update({reader: kind for reader in READERS})
            results.append(failed)
    return results


def _text(output):
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _child(address_space_gb):
    import signal

    limit = int(address_space_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    timeout = float(os.environ.get("NIFTI_FUZZ_TIMEOUT", "60"))

    def on_alarm(signum, frame):
        sys.stderr.write("TIMEOUT\n")
        sys.stderr.flush()
        os._exit(3)

    signal.signal(signal.SIGALRM, on_alarm)
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        signal.setitimer(signal.ITIMER_REAL, timeout)
        result = classify(path)
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _child(float(sys.argv[1]))
