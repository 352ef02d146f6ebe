"""Classification fine-tuning on a small graded photograph dataset (APTOS CSV layout)."""

import json

import numpy as np
import pytest
from PIL import Image

from ssl3d_keras.downstream.finetune import finetune
from ssl3d_keras.errors import DataError


def _graded_photos(folder, n=30, size=40, grades=3):
    """Photographs whose brightness is their grade, as `train.csv` + PNGs (the APTOS layout)."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    lines = ["id_code,diagnosis"]
    for i in range(n):
        grade = i % grades
        pixels = rng.normal(60 + 70 * grade, 10, size=(size, size, 3)).clip(0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"img{i:02d}.png")
        lines.append(f"img{i:02d},{grade}")
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    return folder


def _config(data, **changes):
    config = {"task": "classification", "scratch": True,
              "scratch_encoder": {"depth": 2, "base_filters": 4, "dropout": 0.0, "norm": "group"},
              "steps": 150, "warmup_steps": 0, "schedule": "full", "batch_size": 4,
              "patch_size": 32, "log_every": 10, "checkpoint_every": 20,
              "optimizer": {"learning_rate": 3e-3},
              "evaluation": {"validate_every": 50},
              "data": {"path": str(data), "preprocess": {"normalize": "none"}}}
    config.update(changes)
    return config


@pytest.mark.parametrize("head", ["softmax", "ordinal"])
def test_grades_are_learned_and_scored_with_kappa(tmp_path, head):
    data = _graded_photos(tmp_path / "photos")
    summary = finetune(_config(data, head=head), tmp_path / "run", verbose=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert sorted(r["case"] for r in metrics["cases"]) == splits["test"]
    for row in metrics["cases"]:
        assert row["grade"] == int(row["case"][3:]) % 3
        assert 0 <= row["predicted"] < 3
    # brightness is the grade: a working pipeline beats the chance accuracy of 1/3
    assert summary["test"]["accuracy"] > 0.5
    assert -1 <= summary["test"]["kappa"] <= 1
    assert (tmp_path / "run" / "model.keras").is_file()


def test_a_dataset_without_grades_is_refused(tmp_path):
    from ssl3d_keras.data.phantoms import write_phantom_dataset

    write_phantom_dataset(tmp_path / "phantoms", 3, size=16)
    config = _config(tmp_path / "phantoms")
    with pytest.raises(DataError, match="no case has a grade"):
        finetune(config, tmp_path / "run", verbose=False)
