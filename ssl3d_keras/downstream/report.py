"""Results of the data-efficiency experiment: a CSV of per-case scores, a table and a plot.

The experiment fine-tunes each method (a 3D-pretrained encoder, a 2D-slice
pretrained one, training from scratch) at each label fraction and repeat, and
scores every test case. Each score is one row:

    {"method": "rotation-3d", "fraction": 0.1, "repeat": 0, "case": "BraTS_001",
     "dice_mean": 0.81, "dice_1": 0.77, "dice_2": 0.85, "hd95_mean": 6.2}

The four key columns come first; every other key is a metric column (a float,
NaN allowed). Methods and metric names are data: nothing here knows a fixed list.

- `append_rows` / `read_rows`: the CSV that a killed run can resume from
  (`done_cells`); every append rewrites the file atomically, so a reader sees
  the old file or the new one, never half a row.
- `summary_table`: mean ± sd over repeats of the per-repeat mean over cases.
- `paired_difference`: method minus baseline per test case, with a bootstrap CI
  over cases.
- `markdown_report` and `plot_fractions`: the paper's table and figure.

Example:

>>> rows = [{"method": m, "fraction": 0.1, "repeat": 0, "case": c, "dice_mean": d}
...         for m, shift in (("rotation-3d", 0.2), ("scratch", 0.0))
...         for c, d in (("case_01", 0.4 + shift), ("case_02", 0.5 + shift))]
>>> path = append_rows("results.csv", rows)   # once per finished (method, fraction, repeat)
>>> rows = read_rows("results.csv")
>>> print(markdown_report(rows, metric="dice_mean", baseline="scratch"))  # doctest: +ELLIPSIS
## dice_mean by label fraction
...
| rotation-3d | 0.650 |
| scratch | 0.450 |
...
>>> png = plot_fractions(rows, "dice_by_fraction.png")
"""

import csv
import difflib
import io
import math
import re
from pathlib import Path

import numpy as np

from ssl3d_keras.atomic import atomic_path, write_text_atomic
from ssl3d_keras.errors import ConfigError, DataError

__all__ = [
    "KEY_COLUMNS",
    "append_rows",
    "read_rows",
    "done_cells",
    "summary_table",
    "paired_difference",
    "markdown_report",
    "plot_fractions",
]

KEY_COLUMNS = ("method", "fraction", "repeat", "case")

# Rows resampled per block in the bootstrap: bounds memory to ~block * n_cases indices.
_BOOT_BLOCK = 1000


# --------------------------------------------------------------------------- CSV


def _metric_value(value, where):
    if value is None:
        return math.nan
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(where, f"a metric value must be a number (NaN allowed). "
                               f"Received: {value!r}") from None


def _check_row(row, where):
    """Normalise one in-memory row: (method, fraction, repeat, case) and float metrics."""
    if not isinstance(row, dict):
        raise DataError(where, f"a row must be a dict. Received: {type(row).__name__}")
    missing = [k for k in KEY_COLUMNS if k not in row]
    if missing:
        raise DataError(where, f"a row needs the keys {list(KEY_COLUMNS)}; missing {missing}. "
                               f"Received: keys={list(row)}")
    method, case = row["method"], row["case"]
    for key, value in (("method", method), ("case", case)):
        if not isinstance(value, str) or not value:
            raise DataError(where, f"'{key}' must be a non-empty string. Received: {value!r}")
    try:
        fraction = float(row["fraction"])
    except (TypeError, ValueError):
        fraction = math.nan
    if not 0.0 < fraction <= 1.0:
        raise DataError(where, f"'fraction' must be a float in (0, 1]. "
                               f"Received: {row['fraction']!r}")
    repeat = row["repeat"]
    if isinstance(repeat, bool) or not isinstance(repeat, int | np.integer):
        raise DataError(where, f"'repeat' must be an int. Received: {repeat!r}")
    out = {"method": method, "fraction": fraction, "repeat": int(repeat), "case": case}
    for key, value in row.items():
        if key in KEY_COLUMNS:
            continue
        if not isinstance(key, str) or not key:
            raise DataError(where, f"a metric name must be a non-empty string. Received: {key!r}")
        out[key] = _metric_value(value, where)
    return out


def _header(metrics):
    return [*KEY_COLUMNS, *sorted(metrics)]


def _read_table(path):
    """The header and the raw string rows of an existing results CSV."""
    text = Path(path).read_text()
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise DataError(path, "the results file is empty (no header). Received: 0 lines")
    if tuple(header[:4]) != KEY_COLUMNS or len(set(header)) != len(header):
        raise DataError(path, f"the header must start with {list(KEY_COLUMNS)} and have no "
                              f"repeated column. Received: header={header}")
    records = []
    for lineno, values in enumerate(reader, start=2):
        if not values:
            continue
        if len(values) != len(header):
            raise DataError(path, f"line {lineno} has {len(values)} fields, the header "
                                  f"{len(header)}. Received: {values}")
        records.append(dict(zip(header, values, strict=True)))
    return header, records


def _parse_record(record, where):
    try:
        repeat = int(record["repeat"])
    except ValueError:
        raise DataError(where, f"'repeat' must be an int. Received: {record['repeat']!r}") from None
    row = {"method": record["method"], "fraction": record["fraction"], "repeat": repeat,
           "case": record["case"]}
    row.update({k: v for k, v in record.items() if k not in KEY_COLUMNS})
    return _check_row(row, where)


def _cell_key(row):
    return (row["method"], row["fraction"], row["repeat"], row["case"])


def _format_record(row, header):
    values = []
    for column in header:
        value = row.get(column, math.nan)
        if column in ("method", "case"):
            values.append(value)
        elif column == "repeat":
            values.append(str(value))
        else:
            # repr of a float round-trips exactly (NaN as "nan", which float() reads back).
            values.append(repr(float(value)))
    return values


def _csv_text(header, records):
    """CSV lines of `records`, preceded by `header` unless it is `None`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(records)
    return buffer.getvalue()


def append_rows(path, rows):
    """Append result rows to a CSV file; every call leaves a complete file.

    The file is created with a header on the first call. The header is the
    union of the rows' keys in a stable order: `method, fraction, repeat,
    case`, then the metric columns sorted by name. When new rows bring a metric
    column the file lacks, the whole file is rewritten with the wider header
    (older rows get an empty cell, read back as NaN).

    Every call writes the complete new file to a temporary name beside `path`
    and renames it onto `path` (`ssl3d_keras.atomic`), so a run killed during
    an append leaves the previous file intact, never half a row. Append all
    the cases of one (method, fraction, repeat) in one call: the cell is then
    either absent or complete, which is what `done_cells` relies on to resume.
    One process should write a given file at a time.

    Args:
        path: str or `Path`, the CSV file.
        rows: iterable of dicts with the keys `method` (str), `fraction`
            (float in `(0, 1]`), `repeat` (int), `case` (str) and any number of
            metric columns (numbers; `None` and NaN are stored as NaN). An empty
            iterable leaves the file untouched.

    Returns:
        The `Path` of the file.

    Raises:
        DataError: a row lacks a key column or has an invalid value, a row's
            (method, fraction, repeat, case) is already in the file or twice
            among `rows`, or the existing file is not a results CSV. Nothing is
            written then.

    Example:

    >>> append_rows("scratch.csv", [{"method": "scratch", "fraction": 0.1, "repeat": 0,
    ...                              "case": "case_01", "dice_mean": 0.42}])
    PosixPath('scratch.csv')
    """
    path = Path(path)
    new = [_check_row(row, f"{path} (new row {i})") for i, row in enumerate(rows)]
    if not new:
        return path
    if path.exists():
        header, records = _read_table(path)
        existing = {_cell_key(_parse_record(r, path)) for r in records}
    else:
        header, records, existing = None, [], set()
    seen = set(existing)
    for row in new:
        key = _cell_key(row)
        if key in seen:
            where = "the file" if key in existing else "the new rows"
            raise DataError(path, f"the row (method, fraction, repeat, case) = {key} is already "
                                  f"in {where}; each case is scored once per cell. Received: {key}")
        seen.add(key)

    metrics = {k for row in new for k in row if k not in KEY_COLUMNS}
    if header is not None and metrics <= set(header):
        # Same columns: keep the old text byte for byte and add the new lines.
        old = path.read_text()
        if old and not old.endswith("\n"):
            old += "\n"
        text = old + _csv_text(None, [_format_record(r, header) for r in new])
    else:
        old_metrics = set(header[4:]) if header is not None else set()
        wider = _header(old_metrics | metrics)
        # Old rows keep their exact text; a column they lack is an empty cell (NaN).
        old_records = [[r.get(c, "") for c in wider] for r in records]
        text = _csv_text(wider, old_records + [_format_record(r, wider) for r in new])
    return write_text_atomic(path, text)


def read_rows(path):
    """Read the rows of a results CSV written by `append_rows`.

    Args:
        path: str or `Path`, the CSV file.

    Returns:
        List of dicts in file order: `method` and `case` as str, `fraction`
        as float, `repeat` as int, every metric column as float (an empty cell
        or `nan` is NaN).

    Raises:
        FileNotFoundError: `path` does not exist.
        DataError: the file is not a results CSV (header, field count, values).
    """
    path = Path(path)
    _, records = _read_table(path)
    return [_parse_record(r, f"{path} (row {i})") for i, r in enumerate(records)]


def done_cells(rows):
    """The (method, fraction, repeat) cells that have rows, to skip when resuming.

    Args:
        rows: list of row dicts (e.g. from `read_rows`).

    Returns:
        Set of `(method, fraction, repeat)` tuples, `fraction` a float and
        `repeat` an int.

    Example:

    >>> done_cells([{"method": "scratch", "fraction": 0.1, "repeat": 0, "case": "a"},
    ...             {"method": "scratch", "fraction": 0.1, "repeat": 0, "case": "b"}])
    {('scratch', 0.1, 0)}
    """
    return {(row["method"], float(row["fraction"]), int(row["repeat"])) for row in rows}


# --------------------------------------------------------------------------- statistics


def _check_metric(rows, metric):
    columns = {k for row in rows for k in row if k not in KEY_COLUMNS}
    if metric not in columns:
        close = difflib.get_close_matches(str(metric), sorted(columns), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError("metric", f"not a metric column of the rows (they have "
                                    f"{sorted(columns)}).{hint} Received: metric={metric!r}")


def _check_method(rows, name, role):
    methods = _methods(rows)
    if name not in methods:
        close = difflib.get_close_matches(str(name), methods, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(role, f"no rows have this method (methods: {methods}).{hint} "
                                f"Received: {role}={name!r}")


def _methods(rows):
    """Method names in order of first appearance (the runner's order)."""
    return list(dict.fromkeys(row["method"] for row in rows))


def _fractions(rows):
    return sorted({float(row["fraction"]) for row in rows})


def _value(row, metric):
    value = row.get(metric)
    return math.nan if value is None else float(value)


def _per_repeat_case(rows, method, fraction, metric):
    """{repeat: {case: value}} of one (method, fraction), finite values only."""
    table = {}
    for row in rows:
        if row["method"] != method or float(row["fraction"]) != fraction:
            continue
        value = _value(row, metric)
        if math.isfinite(value):
            table.setdefault(int(row["repeat"]), {})[row["case"]] = value
    return table


def summary_table(rows, metric="dice_mean"):
    """Mean and sd over repeats of the per-repeat mean over test cases.

    For each (method, fraction): each repeat's score is the mean of `metric`
    over its test cases (NaN ignored); the cell reports the mean and the sample
    standard deviation (`ddof=1`) of those repeat scores. Repeats are the unit
    here because each draws a different labelled subset: the sd says how much
    the result depends on which cases were labelled.

    Args:
        rows: list of row dicts (e.g. from `read_rows`).
        metric: str, the metric column. Default `"dice_mean"`.

    Returns:
        List of dicts with keys `method`, `fraction`, `mean`, `sd` (NaN with
        fewer than two repeats), `n_repeats` (repeats with at least one finite
        value) and `n_cases` (distinct cases with a finite value), ordered by
        method (order of first appearance in `rows`) then ascending fraction.
        Empty when `rows` is.

    Raises:
        ConfigError: `metric` is not a metric column of `rows`.

    Example:

    >>> rows = [{"method": "scratch", "fraction": 0.1, "repeat": r, "case": c, "dice_1": d}
    ...         for r, values in enumerate(((0.4, 0.6), (0.6, 0.8))) for c, d in zip("ab", values)]
    >>> row = summary_table(rows, metric="dice_1")[0]
    >>> round(row["mean"], 3), round(row["sd"], 3), row["n_repeats"], row["n_cases"]
    (0.6, 0.141, 2, 2)
    """
    if not rows:
        return []
    _check_metric(rows, metric)
    out = []
    for method in _methods(rows):
        fractions = _fractions([r for r in rows if r["method"] == method])
        for fraction in fractions:
            table = _per_repeat_case(rows, method, fraction, metric)
            scores = np.array([np.mean(list(cases.values())) for cases in table.values()])
            n = len(scores)
            out.append({
                "method": method,
                "fraction": fraction,
                "mean": float(scores.mean()) if n else math.nan,
                "sd": float(scores.std(ddof=1)) if n > 1 else math.nan,
                "n_repeats": n,
                "n_cases": len({case for cases in table.values() for case in cases}),
            })
    return out


def paired_difference(rows, method, baseline="scratch", *, fraction, metric="dice_mean",
                      n_boot=10000, seed=0):
    """Mean per-case difference `method - baseline` with a 95 % bootstrap CI over cases.

    For every test case, the difference of `metric` between `method` and
    `baseline` is taken in each repeat both have a finite value for, and
    averaged over those repeats; the result is the mean of these per-case
    differences. The CI is the 2.5 and 97.5 percentiles of that mean over
    `n_boot` resamples of the cases with replacement.

    Cases are the unit because they are what the methods share: every method,
    fraction and repeat is scored on the same test cases, so a per-case
    difference removes how hard each case is. Repeats are not the unit: each
    draws a different labelled subset, and there are too few of them for a
    bootstrap; averaging over the repeats both methods have (same repeat, same
    labelled subset) pairs like with like. Cases missing in either method, or
    NaN in every shared repeat, are left out.

    Args:
        rows: list of row dicts (e.g. from `read_rows`).
        method: str, the method to compare.
        baseline: str, the reference method. Default `"scratch"`.
        fraction: float, the label fraction (keyword only).
        metric: str, the metric column. Default `"dice_mean"`.
        n_boot: int >= 1, bootstrap resamples. Default 10000.
        seed: int, seed of the `numpy.random.Generator` that resamples.
            Default 0.

    Returns:
        Dict with `mean`, `low`, `high` (floats; NaN when no case is shared)
        and `n_cases` (int, the cases used).

    Raises:
        ConfigError: `metric` is not a column of `rows`, `method` or
            `baseline` has no rows, or `n_boot` < 1.

    Example:

    >>> rows = [{"method": m, "fraction": 0.1, "repeat": 0, "case": f"c{i}",
    ...          "dice_mean": 0.5 + 0.01 * i + (0.1 if m == "rotation-3d" else 0.0)}
    ...         for m in ("rotation-3d", "scratch") for i in range(5)]
    >>> result = paired_difference(rows, "rotation-3d", "scratch", fraction=0.1)
    >>> round(result["mean"], 3), round(result["low"], 3), round(result["high"], 3)
    (0.1, 0.1, 0.1)
    """
    _check_metric(rows, metric)
    _check_method(rows, method, "method")
    _check_method(rows, baseline, "baseline")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ConfigError("n_boot", f"must be an int >= 1. Received: n_boot={n_boot!r}")
    fraction = float(fraction)
    ours = _per_repeat_case(rows, method, fraction, metric)
    theirs = _per_repeat_case(rows, baseline, fraction, metric)
    per_case = {}
    for repeat in sorted(ours.keys() & theirs.keys()):
        a, b = ours[repeat], theirs[repeat]
        for case in a.keys() & b.keys():
            per_case.setdefault(case, []).append(a[case] - b[case])
    if not per_case:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n_cases": 0}
    # Sorted by case id so the resamples (and so the CI) do not depend on row order.
    diffs = np.array([np.mean(per_case[case]) for case in sorted(per_case)])
    n = len(diffs)
    rng = np.random.default_rng(seed)
    means = np.empty(int(n_boot))
    for start in range(0, int(n_boot), _BOOT_BLOCK):
        stop = min(start + _BOOT_BLOCK, int(n_boot))
        index = rng.integers(0, n, size=(stop - start, n))  # (block, n_cases)
        means[start:stop] = diffs[index].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diffs.mean()), "low": float(low), "high": float(high), "n_cases": n}


# --------------------------------------------------------------------------- report


def _fraction_label(fraction):
    return f"{fraction * 100:.4g} %"


def _cell(text):
    return str(text).replace("|", "\\|")


def _n_text(name, values):
    values = [v for v in values if v]
    if not values:
        return f"{name} = 0"
    low, high = min(values), max(values)
    return f"{name} = {low}" if low == high else f"{name} = {low}–{high}"


def _table(header, body):
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in body]
    return lines


def markdown_report(rows, metric="dice_mean", baseline="scratch", *, n_boot=10000, seed=0):
    """The experiment's result tables in Markdown.

    First table: one row per method, one column per label fraction
    (ascending), cells `"0.812 ± 0.031"`, the mean ± sd over repeats from
    `summary_table` (no ± with a single repeat, `—` when a cell has no value).
    Second table: the paired difference of each other method to `baseline`
    from `paired_difference`, cells `"+0.051 [+0.020, +0.083]"` (mean over
    cases [95 % bootstrap CI]). The second table is replaced by a note when no
    row has the baseline method. Fractions are shown as percentages.

    Args:
        rows: list of row dicts (e.g. from `read_rows`).
        metric: str, the metric column. Default `"dice_mean"`.
        baseline: str, the method the differences are taken to. Default
            `"scratch"`.
        n_boot: int, bootstrap resamples per difference. Default 10000.
        seed: int, bootstrap seed. Default 0.

    Returns:
        The Markdown text (ends with a newline).

    Raises:
        ConfigError: `metric` is not a metric column of `rows`.

    Example:

    >>> rows = [{"method": m, "fraction": f, "repeat": 0, "case": "c1", "dice_mean": d}
    ...         for m, f, d in (("rpl-3d", 0.5, 0.7), ("scratch", 0.5, 0.6))]
    >>> "| rpl-3d | +0.100 [+0.100, +0.100] |" in markdown_report(rows)
    True
    """
    lines = [f"## {metric} by label fraction", ""]
    if not rows:
        return "\n".join([*lines, "_No rows._", ""])
    summary = summary_table(rows, metric)
    fractions = _fractions(rows)
    methods = _methods(rows)
    by_cell = {(s["method"], s["fraction"]): s for s in summary}

    lines += [f"Mean ± sd over repeats of the per-repeat mean of `{metric}` over test cases "
              f"({_n_text('n_repeats', [s['n_repeats'] for s in summary])}, "
              f"{_n_text('n_cases', [s['n_cases'] for s in summary])} per cell).", ""]
    body = []
    for method in methods:
        cells = []
        for fraction in fractions:
            s = by_cell.get((method, fraction))
            if s is None or not math.isfinite(s["mean"]):
                cells.append("—")
            elif s["n_repeats"] > 1:
                cells.append(f"{s['mean']:.3f} ± {s['sd']:.3f}")
            else:
                cells.append(f"{s['mean']:.3f}")
        body.append([method, *cells])
    lines += _table(["method", *map(_fraction_label, fractions)], body)

    lines += ["", f"### Paired difference to {baseline}: `{metric}` (method − {baseline})", ""]
    if baseline not in methods:
        return "\n".join([*lines, f"_No rows for the baseline '{baseline}'._", ""])
    others = [m for m in methods if m != baseline]
    diffs = {(m, f): paired_difference(rows, m, baseline, fraction=f, metric=metric,
                                       n_boot=n_boot, seed=seed)
             for m in others for f in fractions}
    lines += [f"Mean over test cases of the per-case difference (averaged over the repeats both "
              f"have) [95 % percentile bootstrap CI over cases, {n_boot} resamples] "
              f"({_n_text('n_cases', [d['n_cases'] for d in diffs.values()])} per cell).", ""]
    body = []
    for method in others:
        cells = []
        for fraction in fractions:
            d = diffs[(method, fraction)]
            if d["n_cases"] == 0:
                cells.append("—")
            else:
                cells.append(f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
        body.append([method, *cells])
    lines += _table(["method", *map(_fraction_label, fractions)], body)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plot

_TWO_D = re.compile(r"(?<![0-9])2d(?![a-z0-9])")
_DIM_TOKEN = re.compile(r"[-_ ]?(?<![0-9])[23]d(?![a-z0-9])[-_ ]?")


def _line_style(method):
    """(family, linestyle): scratch grey (dashed, dotted in 2D), 2D dashed, 3D solid."""
    name = method.lower()
    if "scratch" in name:
        return None, ":" if _TWO_D.search(name) else "--"
    # 2D and 3D variants of a task share a colour, so the pair reads as one comparison.
    family = _DIM_TOKEN.sub("", name) or name
    return family, "--" if _TWO_D.search(name) else "-"


def plot_fractions(rows, path, metric="dice_mean", title=None):
    """Plot `metric` against label fraction, one line per method, to a PNG.

    Each line is the mean over repeats (markers at the fractions) with a band
    of ± one sd over repeats (`summary_table`). Training from scratch (a method
    whose name contains "scratch") is grey, dashed (dotted for a 2D scratch), 2D methods (a `2d` token in
    the name, e.g. `"rotation-2d"`) are dashed, 3D methods solid; the 2D and 3D
    variants of one task share a colour. The x axis has the fractions as ticks,
    on a log scale when they span more than a factor 4.

    Draws on a `matplotlib.figure.Figure` with its own Agg canvas (no pyplot),
    so the caller's matplotlib backend and open figures are untouched. The PNG
    (120 dpi) is written atomically.

    Args:
        rows: list of row dicts (e.g. from `read_rows`).
        path: str or `Path`, the PNG file.
        metric: str, the metric column. Default `"dice_mean"`.
        title: str or `None`, the title; `None` means `"<metric> by label fraction"`.

    Returns:
        The `Path` written.

    Raises:
        ConfigError: `metric` is not a metric column of `rows`.
        DataError: `rows` is empty or has no finite value of `metric`.

    Example:

    >>> rows = [{"method": m, "fraction": f, "repeat": 0, "case": "c1", "dice_mean": d}
    ...         for m, f, d in (("rpl-3d", 0.1, 0.5), ("rpl-3d", 1.0, 0.7),
    ...                         ("scratch", 0.1, 0.3), ("scratch", 1.0, 0.6))]
    >>> plot_fractions(rows, "figures/dice_by_fraction.png").name
    'dice_by_fraction.png'
    """
    from matplotlib import rcParams
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    summary = summary_table(rows, metric)
    if not any(math.isfinite(s["mean"]) for s in summary):
        raise DataError("rows", f"nothing to plot: no finite value of '{metric}'. "
                                f"Received: {len(rows)} rows")
    fractions = _fractions(rows)

    figure = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    palette = [c["color"] for c in rcParams["axes.prop_cycle"]]
    colours = {}
    for method in _methods(rows):
        cells = [s for s in summary if s["method"] == method and math.isfinite(s["mean"])]
        if not cells:
            continue
        x = np.array([s["fraction"] for s in cells])
        y = np.array([s["mean"] for s in cells])
        sd = np.nan_to_num(np.array([s["sd"] for s in cells]), nan=0.0)
        family, linestyle = _line_style(method)
        if family is None:
            colour = "0.45"
        else:
            colour = colours.setdefault(family, palette[len(colours) % len(palette)])
        ax.plot(x, y, linestyle=linestyle, marker="o", color=colour, label=method, zorder=3)
        ax.fill_between(x, y - sd, y + sd, color=colour, alpha=0.15, linewidth=0, zorder=2)

    if fractions[-1] / fractions[0] > 4:
        ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(fractions))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticklabels([_fraction_label(f) for f in fractions])
    ax.set_xlabel("label fraction")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by label fraction" if title is None else title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    figure.tight_layout()

    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)
    return path
