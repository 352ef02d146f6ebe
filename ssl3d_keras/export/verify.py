"""Check one SavedModel export with every real client, each in its own process.

Clients: `tensorflow_hub.load` and `hub.KerasLayer` fine-tuning in tf_keras,
`keras.layers.TFSMLayer` (Keras 3), our `SavedModelLayer` fine-tuning with
Adam, and `saved_model_cli show` / `run` (the TF Serving view). Every client
compares its outputs with the original encoder's on a random probe input
(`probe.npz`, written by `write_probe`) to within `tolerance`.

Processes keep the clients honest: tf_keras and Keras 3 cannot share one
process cleanly, and the clean-venv check must not see ssl3d_keras at all.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ssl3d_keras.errors import ExportError

CLIENT_DIR = Path(__file__).parent / "clients"
# Clients that need only tensorflow, tensorflow-hub and tf-keras.
STANDALONE_CLIENTS = ("hub_tf_keras", "keras3_tfsm", "saved_model_cli")
ALL_CLIENTS = (*STANDALONE_CLIENTS, "keras3_layer")


def write_probe(encoder, path, *, spatial=None, batch=2, seed=0, tolerance=1e-5):
    """Run `encoder` on a seeded random input and save input and outputs to `path` (.npz).

    Args:
        encoder: the original `keras.Model` (e.g. from the preset).
        path: the `.npz` file to write.
        spatial: tuple of spatial sizes; default `min_input_size` * 2 on each axis
            (or the encoder's fixed input size).
        batch: int, batch size (>= 2 so the tf_keras fine-tune sees two classes).
        seed: int, numpy seed of the input.
        tolerance: float, largest allowed absolute difference for the clients.

    Returns:
        `path`.
    """
    from ssl3d_keras.export.savedmodel import skips_model_of

    shape = list(encoder.inputs[0].shape[1:])
    if spatial is None:
        size = 2 * int(getattr(encoder, "min_input_size", 8))
        spatial = [s if s is not None else size for s in shape[:-1]]
    x = np.random.default_rng(seed).normal(size=(batch, *spatial, shape[-1])).astype(np.float32)
    arrays = {"inputs": x, "tolerance": np.float64(tolerance)}
    arrays["features"] = np.asarray(encoder(x, training=False))
    skips = skips_model_of(encoder)
    if skips is not None:
        for name, value in skips(x, training=False).items():
            if name != "features":
                arrays[f"skip:{name}"] = np.asarray(value)
    regularized = [w for w in encoder.trainable_weights if getattr(w, "regularizer", None)]
    arrays["n_regularizers"] = np.int64(len(regularized))
    np.savez(path, **arrays)
    return path


def run_client(client, savedmodel, probe, *, python=None, timeout=600):
    """Run one client in a fresh process; returns its dict of checks.

    Args:
        client: one of `ALL_CLIENTS`.
        savedmodel: the SavedModel folder.
        probe: the `.npz` from `write_probe`.
        python: the interpreter to use (default: this one). Its folder must also
            hold `saved_model_cli` for that client.
        timeout: seconds.

    Returns:
        dict `{check name: {"ok": bool, "value": ...}}`.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if python is not None:
        # Another interpreter (e.g. the clean venv) must not see our package.
        env.pop("PYTHONPATH", None)
    python = python or sys.executable
    if client == "saved_model_cli":
        return _saved_model_cli(savedmodel, probe, python, env, timeout)
    if client not in ALL_CLIENTS:
        raise ExportError(f"unknown client {client!r}; known: {list(ALL_CLIENTS)}")
    script = CLIENT_DIR / f"{client}.py"
    proc = subprocess.run([python, str(script), str(savedmodel), str(probe)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("SSL3D-CHECKS "):
            return json.loads(line[len("SSL3D-CHECKS "):])["checks"]
    tail = (proc.stderr or proc.stdout)[-3000:]
    return {f"{client} ran": {"ok": False, "value": f"exit {proc.returncode}: {tail}"}}


def _saved_model_cli(savedmodel, probe, python, env, timeout):
    cli = str(Path(python).parent / "saved_model_cli")
    checks = {}
    show = subprocess.run([cli, "show", "--dir", str(savedmodel), "--all"], env=env,
                          capture_output=True, text=True, timeout=timeout)
    checks["saved_model_cli show --all lists serving_default"] = {
        "ok": show.returncode == 0 and "signature_def['serving_default']" in show.stdout,
        "value": show.stdout[-500:] if show.returncode == 0 else show.stderr[-2000:]}
    with np.load(probe) as data:
        x, expected, tol = data["inputs"], data["features"], float(data["tolerance"])
    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "x.npy"), x)
        out = os.path.join(tmp, "out")
        run = subprocess.run(
            [cli, "run", "--dir", str(savedmodel), "--tag_set", "serve", "--signature_def",
             "serving_default", "--inputs", f"inputs={os.path.join(tmp, 'x.npy')}",
             "--outdir", out], env=env, capture_output=True, text=True, timeout=timeout)
        result = os.path.join(out, "features.npy")
        if run.returncode != 0 or not os.path.isfile(result):
            checks["saved_model_cli run == encoder"] = {"ok": False, "value": run.stderr[-2000:]}
        else:
            got = np.load(result)
            diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else None
            checks["saved_model_cli run == encoder"] = {
                "ok": diff is not None and diff <= tol, "value": diff}
    return checks


def verify_export(savedmodel, probe, *, clients=ALL_CLIENTS, python=None):
    """Run `clients` on the export; returns `{client: checks}`.

    Raises:
        ExportError: any check failed; the message lists each failure.
    """
    results = {client: run_client(client, savedmodel, probe, python=python)
               for client in clients}
    failures = [f"{client}: {name} ({check['value']})"
                for client, checks in results.items()
                for name, check in checks.items() if not check["ok"]]
    if failures:
        raise ExportError(f"{savedmodel}: {len(failures)} client check(s) failed: "
                          + "; ".join(failures))
    return results


def make_clean_venv(venv_dir, *, requirements=None):
    """Create a venv with only tensorflow, tensorflow-hub and tf-keras (no ssl3d_keras).

    Args:
        venv_dir: folder of the new venv (created, or reused if it has a python).
        requirements: pip requirement strings; default the pins of this package.

    Returns:
        Path of the venv's python.
    """
    from importlib.metadata import version

    venv_dir = Path(venv_dir)
    python = venv_dir / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True)
    requirements = requirements or [f"tensorflow=={version('tensorflow')}",
                                    f"tensorflow-hub=={version('tensorflow-hub')}",
                                    f"tf-keras=={version('tf-keras')}"]
    subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
    # From a neutral folder without PYTHONPATH: `-c` puts the working folder on sys.path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = subprocess.run([str(python), "-c", "import ssl3d_keras"], capture_output=True,
                           cwd=venv_dir, env=env)
    if check.returncode == 0:
        raise ExportError(f"{venv_dir}: the clean venv can import ssl3d_keras; "
                          "it must not (the check is that exports are self-contained)")
    return python
