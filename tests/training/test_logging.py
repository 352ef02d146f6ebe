"""metrics.csv: torn rows left by a killed writer, files written before `skipped` existed."""

import pytest

from ssl3d_keras.training.logging import CSV_COLUMNS, TrainingLogger, read_metrics, truncate_metrics

HEADER = "step,loss,accuracy,lr,examples_per_sec,wall,skipped\r\n"


def test_a_torn_last_row_is_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "metrics.csv"
    path.write_text(HEADER + "1,2.5,0.1,0.001,10.0,1.0,0\r\n2,2.4,0.2,0.001,10.0,2.0,0\r\n3,2.")
    with caplog.at_level("WARNING", logger="ssl3d_keras"):
        rows = truncate_metrics(path, last_step=10)
    assert [r["step"] for r in rows] == [1, 2]
    assert "torn" in caplog.text and "'3,2.'" in caplog.text
    assert path.read_bytes().endswith(b"\r\n")  # whole rows only


def test_a_row_with_missing_fields_is_dropped(tmp_path, caplog):
    path = tmp_path / "metrics.csv"
    path.write_text(HEADER + "1,2.5,0.1,0.001,10.0,1.0,0\r\n2,2.4\r\nx,1,1,1,1,1,0\r\n")
    with caplog.at_level("WARNING", logger="ssl3d_keras"):
        rows = truncate_metrics(path, last_step=10)
    assert [r["step"] for r in rows] == [1]
    assert caplog.text.count("dropped an incomplete row") == 2


def test_a_file_without_the_skipped_column_reads_it_as_zero(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss,accuracy,lr,examples_per_sec,wall\r\n1,2.5,0.1,0.001,10.0,1.0\r\n")
    assert read_metrics(path)[0]["skipped"] == 0
    truncate_metrics(path, last_step=1)  # a resume rewrites it with today's columns
    assert path.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)
    assert read_metrics(path) == [{"step": 1, "loss": 2.5, "accuracy": 0.1, "lr": 0.001,
                                   "examples_per_sec": 10.0, "wall": 1.0, "skipped": 0.0}]


def test_skipped_steps_are_counted_and_left_out_of_the_mean(tmp_path):
    logger = TrainingLogger(tmp_path, total_steps=6, start_step=0, global_batch=2, log_every=3,
                            verbose=False)
    logger.step(1, {"loss": 1.0, "accuracy": 1.0}, lr=0.1)
    logger.step(2, {"loss": float("nan"), "accuracy": 0.0}, lr=0.1, skipped=True)
    logger.step(3, {"loss": 3.0, "accuracy": 0.0}, lr=0.1)
    for step in (4, 5, 6):
        logger.step(step, {"loss": float("inf"), "accuracy": 0.0}, lr=0.1, skipped=True)
    logger.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["skipped"] for r in rows] == [1, 3]
    assert rows[0]["loss"] == pytest.approx(2.0) and rows[0]["accuracy"] == pytest.approx(0.5)
    assert rows[1]["loss"] != rows[1]["loss"]  # NaN: a window of skipped steps only
    assert logger.skipped_total == 4 and logger.last_finite["step"] == 3
