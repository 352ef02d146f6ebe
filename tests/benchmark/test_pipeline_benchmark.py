import json
import math

from click.testing import CliRunner

from ssl3d_keras.benchmark.pipeline import format_pipeline_results, measure_pipeline
from ssl3d_keras.cli.main import cli

STAGES = {"phantom_generation": "volumes", "shard_write": "volumes", "shard_read": "volumes",
          "pipeline_phantoms": "crops", "pipeline_phantoms_cached": "crops",
          "pipeline_shards": "crops"}


def test_measure_pipeline_reports_median_rates():
    results = measure_pipeline(n_volumes=2, size=12, crop=8, batch_size=2, steps=2, seed=0,
                               repeats=3)
    assert results["settings"]["n_volumes"] == 2
    for stage, unit in STAGES.items():
        row = results[stage]
        assert len(row["times_sec"]) == 3
        assert row["median_sec"] == sorted(row["times_sec"])[1]
        count = 2 if unit == "volumes" else 4
        assert math.isclose(row[f"{unit}_per_sec"], count / row["median_sec"])
    table = format_pipeline_results(results)
    assert all(stage in table for stage in STAGES)


def test_benchmark_cli_writes_json(tmp_path):
    out = tmp_path / "results.json"
    result = CliRunner().invoke(cli, ["benchmark", "--suite", "pipeline", "--n-volumes", "2",
                                      "--size", "10", "--crop", "8", "--batch-size", "2",
                                      "--steps", "1", "--repeats", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "crops/s" in result.output
    saved = json.loads(out.read_text())
    assert saved["pipeline"]["pipeline_shards"]["crops_per_sec"] > 0


def test_train_suite_compares_precisions_and_xla_in_one_run(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["benchmark", "--suite", "train", "--compare", "--crop",
                                      "16", "--batch-size", "2", "--steps", "2",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["train"]
    settings = [(r["precision"], r["jit_compile"]) for r in rows]
    assert settings == [("float32", False), ("float32", True), ("mixed_bfloat16", False),
                        ("mixed_bfloat16", True)]
    assert rows[0]["speedup"] == 1.0 and all(r["speedup"] > 0 for r in rows)
    assert "speed-up" in result.output and "1.00x" in result.output
