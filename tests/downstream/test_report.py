"""Tests of the data-efficiency bookkeeping: CSV, summary, paired bootstrap, Markdown, plot."""

import math
import struct
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from ssl3d_keras.downstream import report
from ssl3d_keras.downstream.report import (
    append_rows,
    done_cells,
    markdown_report,
    paired_difference,
    plot_fractions,
    read_rows,
    summary_table,
)
from ssl3d_keras.errors import ConfigError, DataError


def _row(method, fraction, repeat, case, **metrics):
    return {"method": method, "fraction": fraction, "repeat": repeat, "case": case, **metrics}


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def _assert_rows_equal(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for key in w:
            if key in ("method", "case"):
                assert g[key] == w[key]
            else:
                assert _same(g[key], w[key]), (key, g[key], w[key])


def _temp_files(folder):
    return [p.name for p in Path(folder).iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- CSV


def test_round_trip_with_nan_and_a_column_added_later(tmp_path):
    path = tmp_path / "results.csv"
    first = [_row("rotation-3d", 0.1, 0, "case,01", dice_mean=0.1 + 0.2, dice_1=math.nan),
             _row("rotation-3d", 0.1, 0, "case_02", dice_mean=1 / 3, dice_1=0.5)]
    append_rows(path, first)
    assert path.read_text().splitlines()[0] == "method,fraction,repeat,case,dice_1,dice_mean"
    _assert_rows_equal(read_rows(path), first)

    later = [_row("scratch", 1, np.int64(2), "case_01", hd95_mean=7.25, dice_mean=np.float32(0.5),
                  dice_1=None)]
    append_rows(path, later)
    header = path.read_text().splitlines()[0]
    assert header == "method,fraction,repeat,case,dice_1,dice_mean,hd95_mean"
    rows = read_rows(path)
    want = [{**r, "hd95_mean": math.nan} for r in first]
    want.append(_row("scratch", 1.0, 2, "case_01", hd95_mean=7.25, dice_mean=0.5, dice_1=math.nan))
    _assert_rows_equal(rows, want)
    assert type(rows[2]["fraction"]) is float and type(rows[2]["repeat"]) is int
    assert _temp_files(tmp_path) == []


def test_append_with_known_columns_keeps_the_old_text(tmp_path):
    path = tmp_path / "results.csv"
    append_rows(path, [_row("a", 0.5, 0, "c1", dice_mean=0.7, dice_1=0.6)])
    old = path.read_text()
    append_rows(path, [_row("a", 0.5, 0, "c2", dice_mean=0.8)])  # a subset of the columns
    assert path.read_text().startswith(old)
    assert math.isnan(read_rows(path)[1]["dice_1"])


@pytest.mark.parametrize("new_column", [False, True])
def test_a_writer_killed_mid_append_leaves_the_old_file(tmp_path, monkeypatch, new_column):
    path = tmp_path / "results.csv"
    append_rows(path, [_row("a", 0.5, 0, "c1", dice_mean=0.7)])
    old = path.read_text()
    real_write_text = Path.write_text

    def half_then_die(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(Path, "write_text", half_then_die)
    extra = {"hd95_mean": 3.0} if new_column else {}
    with pytest.raises(KeyboardInterrupt):
        append_rows(path, [_row("a", 0.5, 0, "c2", dice_mean=0.9, **extra)])
    monkeypatch.undo()
    assert path.read_text() == old
    assert _temp_files(tmp_path) == []
    assert [r["case"] for r in read_rows(path)] == ["c1"]


def test_invalid_or_duplicate_rows_are_rejected_and_nothing_is_written(tmp_path):
    path = tmp_path / "results.csv"
    append_rows(path, [_row("a", 0.5, 0, "c1", dice_mean=0.7)])
    old = path.read_text()
    bad = [
        [_row("a", 0.5, 0, "c1", dice_mean=0.1)],                       # already in the file
        [_row("a", 0.5, 1, "c9"), _row("a", 0.5, 1, "c9")],              # twice in the batch
        [_row("a", 0.5, 1, "c2"), {"method": "a", "fraction": 0.5, "repeat": 1}],  # no case
        [_row("a", 0.0, 1, "c2")],                                      # fraction not in (0, 1]
        [_row("a", 0.5, 1.0, "c2")],                                    # repeat not an int
        [_row("a", 0.5, 1, "c2", dice_mean="good")],                    # metric not a number
    ]
    for rows in bad:
        with pytest.raises(DataError):
            append_rows(path, rows)
        assert path.read_text() == old
    with pytest.raises(DataError, match="Received: keys="):
        append_rows(path, bad[2])


def test_read_rows_rejects_a_file_that_is_not_a_results_csv(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("case,method\nx,y\n")
    with pytest.raises(DataError, match="header"):
        read_rows(path)
    with pytest.raises(FileNotFoundError):
        read_rows(tmp_path / "missing.csv")


def test_done_cells():
    rows = [_row("a", 0.25, 0, "c1"), _row("a", 0.25, 0, "c2"), _row("b", 1, 3, "c1")]
    assert done_cells(rows) == {("a", 0.25, 0), ("b", 1.0, 3)}
    assert done_cells([]) == set()


# --------------------------------------------------------------------------- statistics


def _hand_rows():
    return [
        _row("m", 0.5, 0, "c1", dice_mean=0.8), _row("m", 0.5, 0, "c2", dice_mean=0.6),
        _row("m", 0.5, 1, "c1", dice_mean=0.9), _row("m", 0.5, 1, "c2", dice_mean=math.nan),
        _row("m", 0.1, 0, "c1", dice_mean=0.2), _row("m", 0.1, 0, "c3", dice_mean=0.4),
        _row("scratch", 0.5, 0, "c1", dice_mean=math.nan),
    ]


def test_summary_table_against_a_hand_computation():
    table = summary_table(_hand_rows())
    assert [(t["method"], t["fraction"]) for t in table] == [
        ("m", 0.1), ("m", 0.5), ("scratch", 0.5)]
    small, half, scratch = table
    # fraction 0.1: one repeat, mean of (0.2, 0.4).
    assert small["mean"] == pytest.approx(0.3) and math.isnan(small["sd"])
    assert (small["n_repeats"], small["n_cases"]) == (1, 2)
    # fraction 0.5: repeat means 0.7 and 0.9 (NaN ignored); sample sd of those.
    assert half["mean"] == pytest.approx(0.8)
    assert half["sd"] == pytest.approx(math.sqrt(((0.7 - 0.8) ** 2 + (0.9 - 0.8) ** 2) / 1))
    assert (half["n_repeats"], half["n_cases"]) == (2, 2)
    assert math.isnan(scratch["mean"]) and scratch["n_repeats"] == 0
    assert summary_table([]) == []


def test_unknown_metric_suggests_the_closest_column():
    with pytest.raises(ConfigError, match="Did you mean 'dice_mean'"):
        summary_table(_hand_rows(), metric="dice_maen")


def _experiment(rng, n_cases=30, repeats=3, shift=0.1, noise=0.0, fractions=(0.1, 0.5, 1.0)):
    """Scratch scores per (fraction, repeat, case) and a method at scratch + shift (+ noise)."""
    rows = []
    for fraction in fractions:
        for repeat in range(repeats):
            for i in range(n_cases):
                base = float(rng.uniform(0.3, 0.8))
                rows.append(_row("scratch", fraction, repeat, f"c{i:02d}", dice_mean=base))
                value = base + shift + float(rng.normal(0, noise)) if noise else base + shift
                rows.append(_row("rotation-3d", fraction, repeat, f"c{i:02d}", dice_mean=value))
    return rows


def test_paired_difference_of_a_constant_shift(rng):
    rows = _experiment(rng)
    d = paired_difference(rows, "rotation-3d", "scratch", fraction=0.5)
    assert d["n_cases"] == 30
    assert d["mean"] == pytest.approx(0.1, abs=1e-12)
    assert d["low"] <= 0.1 + 1e-12 and d["high"] >= 0.1 - 1e-12
    assert d["high"] - d["low"] < 1e-12


def test_paired_difference_with_noise_covers_the_shift_and_matches_numpy(rng):
    rows = _experiment(rng, n_cases=40, shift=0.05, noise=0.03)
    rows = [r for r in rows if not (r["method"] == "scratch" and r["case"] == "c07")]
    rows = [r for r in rows if not (r["method"] == "rotation-3d" and r["repeat"] == 2)]
    d = paired_difference(rows, "rotation-3d", fraction=0.1, n_boot=4000, seed=3)
    assert d["n_cases"] == 39                      # c07 has no scratch score
    assert d["low"] < d["mean"] < d["high"] and d["high"] - d["low"] < 0.05

    # Independent reference: per case, mean over the shared repeats (0, 1) of the difference.
    value = {(r["method"], r["repeat"], r["case"]): r["dice_mean"]
             for r in rows if r["fraction"] == 0.1}
    cases = sorted({c for (m, _, c) in value if m == "scratch"})
    per_case = np.array([np.mean([value["rotation-3d", k, c] - value["scratch", k, c]
                                  for k in (0, 1)]) for c in cases])
    assert d["mean"] == pytest.approx(per_case.mean(), abs=1e-12)
    boot = np.random.default_rng(0).choice(per_case, size=(4000, len(per_case))).mean(axis=1)
    assert d["low"] == pytest.approx(np.percentile(boot, 2.5), abs=0.004)
    assert d["high"] == pytest.approx(np.percentile(boot, 97.5), abs=0.004)
    # Seeded: the same seed gives the same CI.
    assert paired_difference(rows, "rotation-3d", fraction=0.1, n_boot=4000, seed=3) == d


def test_paired_difference_ci_covers_the_true_shift_in_seeded_examples():
    # 200 seeded experiments with a true shift of 0.05 and noise: a 95 % CI must contain the
    # shift in about 95 % of them (binomial sd 1.5 %; percentile CIs run a little narrow).
    hits = 0
    for seed in range(200):
        rows = _experiment(np.random.default_rng(seed), n_cases=30, repeats=2, shift=0.05,
                           noise=0.05, fractions=(0.25,))
        d = paired_difference(rows, "rotation-3d", fraction=0.25, n_boot=500, seed=seed)
        assert d["high"] - d["low"] > 0.005
        hits += d["low"] <= 0.05 <= d["high"]
    assert 0.88 <= hits / 200 <= 0.99


def test_paired_difference_without_shared_cases_and_bad_arguments(rng):
    rows = _experiment(rng, n_cases=3, fractions=(0.5,))
    rows.append(_row("rotation-2d", 1.0, 0, "c00", dice_mean=0.5))
    d = paired_difference(rows, "rotation-2d", fraction=1.0)
    assert d["n_cases"] == 0 and math.isnan(d["mean"])
    with pytest.raises(ConfigError, match="Did you mean 'rotation-3d'"):
        paired_difference(rows, "rotation3d", fraction=0.5)
    with pytest.raises(ConfigError, match="n_boot"):
        paired_difference(rows, "rotation-3d", fraction=0.5, n_boot=0)


# --------------------------------------------------------------------------- report


def test_markdown_report_has_every_method_and_fraction(rng):
    rows = _experiment(rng, n_cases=5, repeats=2, fractions=(0.1, 0.25, 1.0))
    rows += [_row("rotation-2d", f, 0, f"c{i:02d}", dice_mean=0.5)
             for f in (0.1, 0.25) for i in range(5)]
    text = markdown_report(rows, n_boot=200)
    lines = text.splitlines()
    assert "dice_mean" in lines[0]
    assert "n_repeats = 1–2" in text and "n_cases = 5" in text
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| method | 10 % | 25 % | 100 % |"
    for method in ("rotation-3d", "scratch", "rotation-2d"):
        assert any(line.startswith(f"| {method} |") for line in table)

    expected = summary_table(rows)
    cell = next(s for s in expected if s["method"] == "scratch" and s["fraction"] == 0.25)
    assert f"{cell['mean']:.3f} ± {cell['sd']:.3f}" in text
    row_2d = next(line for line in table if line.startswith("| rotation-2d |"))
    assert "± " not in row_2d and row_2d.endswith("| — |")      # one repeat; no 100 % run

    diff_rows = [line for line in text.split("### ")[1].splitlines() if line.startswith("| ")]
    assert diff_rows[0] == table[0] and len(diff_rows) == 3       # header, 3D and 2D
    assert diff_rows[1] == ("| rotation-3d | +0.100 [+0.100, +0.100] | +0.100 [+0.100, +0.100] "
                            "| +0.100 [+0.100, +0.100] |")
    assert not any(line.startswith("| scratch |") for line in diff_rows)


def test_markdown_report_without_the_baseline(rng):
    rows = [r for r in _experiment(rng, n_cases=3) if r["method"] != "scratch"]
    text = markdown_report(rows, baseline="scratch")
    assert "No rows for the baseline 'scratch'" in text and "rotation-3d" in text


def _png_size(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("fractions", [(0.1, 0.25, 0.5, 1.0), (0.5, 1.0)])
def test_plot_writes_a_png_and_keeps_the_callers_backend(rng, tmp_path, fractions):
    rows = _experiment(rng, n_cases=4, repeats=2, noise=0.02, fractions=fractions)
    rows += [_row("rotation-2d", f, 0, f"c{i}", dice_mean=0.6) for f in fractions for i in range(4)]
    before = matplotlib.get_backend()
    matplotlib.use("svg")                     # a caller's backend that is not Agg
    try:
        out = plot_fractions(rows, tmp_path / "fig" / "dice.png", title="Dice")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert out == tmp_path / "fig" / "dice.png"
    assert _png_size(out) == (round(6.4 * 120), round(4.4 * 120))   # 120 dpi
    assert _temp_files(out.parent) == []


def test_plot_without_values_is_an_error(tmp_path):
    rows = [_row("a", 0.5, 0, "c1", dice_mean=math.nan)]
    with pytest.raises(DataError, match="nothing to plot"):
        plot_fractions(rows, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_line_styles_follow_the_method_kind():
    assert report._line_style("scratch") == (None, "--")
    assert report._line_style("rotation-2d") == ("rotation", "--")
    assert report._line_style("rotation-3d") == ("rotation", "-")
    assert report._line_style("jigsaw_3d")[1] == "-"
