"""Helpers shared by the client scripts (imported by path, no ssl3d_keras)."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def read_args():
    """`(savedmodel_dir, probe dict of numpy arrays, tolerance)` from argv."""
    path, probe_file = sys.argv[1], sys.argv[2]
    with np.load(probe_file) as data:
        probe = {k: data[k] for k in data.files}
    return path, probe, float(probe["tolerance"])


def max_diff(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


class Checks:
    """Collects named verdicts and prints them as one JSON line."""

    def __init__(self, client):
        self.client = client
        self.checks = {}

    def close(self, name, actual, expected, tol):
        diff = max_diff(actual, expected)
        self.checks[name] = {"ok": bool(diff <= tol), "value": diff}

    def true(self, name, ok, value=None):
        self.checks[name] = {"ok": bool(ok), "value": value}

    def run(self, name, fn):
        """Run `fn(self)`; an exception becomes a failed check named `name`."""
        try:
            fn(self)
        except Exception as e:  # a client failure is a verdict, not a crash
            self.checks[name] = {"ok": False, "value": f"{type(e).__name__}: {e}"[:2000]}

    def emit(self):
        print("SSL3D-CHECKS " + json.dumps({"client": self.client, "checks": self.checks}))
