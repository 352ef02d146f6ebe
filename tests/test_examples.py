"""The example scripts run at tiny sizes (each in its own process, as a user runs them)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(script, *args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("examples")
    stdout = _run("pretrain_and_export.py", "--out", str(out), "--tiny", cwd=out)
    assert "reloaded preset matches the trained encoder" in stdout
    return out / "export"


@pytest.mark.subprocess
def test_pretrain_export_and_serve(tiny_export, tmp_path):
    assert (tiny_export / "hub.tar.gz").is_file()
    stdout = _run("serve_signature.py", "--export", str(tiny_export), cwd=tmp_path)
    assert "serving_default: inputs [2, 8, 8, 8, 1] -> features [2, 2, 2, 2, 4]" in stdout
    assert "max |diff| = 0.00e+00" in stdout


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("script, expected", [
    ("finetune_tf_keras_hub.py", "hub.KerasLayer fine-tuned 16/16 encoder weights"),
    ("finetune_keras3.py", "SavedModelLayer fine-tuned 16/16 encoder weights with Adam"),
])
def test_finetune_examples(tiny_export, tmp_path, script, expected):
    assert expected in _run(script, "--export", str(tiny_export), cwd=tmp_path)


@pytest.mark.slow
@pytest.mark.subprocess
def test_tiny_mode_makes_its_own_export(tmp_path):
    assert "features" in _run("serve_signature.py", "--tiny", cwd=tmp_path)
