"""Plan, run and report the performance suite (`ssl3d benchmark speed`).

`run_speed_suite` runs the measurements of `ssl3d_keras.benchmark.speed`, each
in its own process, checks them against the project's targets and writes
`speed.json`, `speed.csv`, `speed.md` and `speed.png` to the output folder.
"""

import csv
import dataclasses
import json
import os
import platform

from ssl3d_keras.atomic import atomic_path, write_json_atomic, write_text_atomic
from ssl3d_keras.benchmark.speed import PAPER_BATCH, PAPER_MIN_SIZE, TASKS, run_isolated
from ssl3d_keras.errors import ConfigError


def precisions_here():
    """float32 and the mixed precision this machine offers: float16 on a GPU, else bfloat16."""
    import tensorflow as tf

    mixed = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    return ("float32", mixed)


@dataclasses.dataclass
class SpeedPlan:
    """What one run of the suite measures.

    Args:
        tasks: proxy tasks measured.
        sizes: input edge per task.
        batches: batch size per task.
        encoder: `UNetEncoder` arguments; `{}` is the paper encoder.
        reference_size, reference_batch: the bare-Keras comparison's input.
        steps: timed steps per model measurement.
        rounds: rounds of the interleaved comparison.
        scaling_volumes: phantom counts of the scaling epochs.
        precisions: float32 and the mixed precision compared with it.
    """

    tasks: tuple
    sizes: dict
    batches: dict
    encoder: dict
    reference_size: int = 64
    reference_batch: int = 4
    steps: int = 3
    rounds: int = 5
    scaling_volumes: tuple = (10, 100, 1000)
    precisions: tuple = ("float32", "mixed_bfloat16")


def make_plan(tasks=TASKS, sizes=None, batch_size=None, quick=False):
    """The suite's settings: the paper's, or a small `quick` version for CI.

    Args:
        tasks: task names.
        sizes: None (each task at 64, or the smallest edge at which the paper
            encoder runs it), or one or more input edges: one applies to every
            task, several map onto `tasks` in order.
        batch_size: None (the authors' batch sizes) or one batch for every task.
        quick: the reduced encoder at 32^3, batch 2, few steps.

    Raises:
        ConfigError: an unknown task, or a size list whose length differs from the tasks'.
    """
    tasks = tuple(tasks)
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ConfigError("tasks", f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    if quick:
        from ssl3d_keras.training.config import QUICK_ENCODER

        plan = SpeedPlan(tasks, {t: 32 for t in tasks}, {t: 2 for t in tasks},
                         dict(QUICK_ENCODER), reference_size=32, reference_batch=2, steps=3,
                         rounds=2, scaling_volumes=(10, 40))
    else:
        plan = SpeedPlan(tasks, {t: max(64, PAPER_MIN_SIZE[t]) for t in tasks},
                         {t: PAPER_BATCH[t] for t in tasks}, {})
    if sizes:
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) not in (1, len(tasks)):
            raise ConfigError("sizes", f"give one size, or one per task ({len(tasks)}). "
                              f"Received: {list(sizes)}")
        plan.sizes = dict(zip(tasks, sizes * len(tasks) if len(sizes) == 1 else sizes, strict=True))
    if batch_size:
        plan.batches = {t: int(batch_size) for t in tasks}
    plan.precisions = precisions_here()
    return plan


def run_speed_suite(plan, *, echo=print):
    """Run every measurement of `plan`, each in a fresh process.

    Args:
        plan: a `SpeedPlan`.
        echo: called with one line per finished measurement.

    Returns:
        dict: `machine`, `plan`, `ceiling`, `compare`, `reference_memory`,
        `tasks` (per task: `model`, `pipeline`, `end_to_end` per precision),
        `scaling` (a list), `workers` (one and two loopback worker processes)
        and `targets` (see `check_targets`).
    """
    results = {"machine": _machine(), "plan": dataclasses.asdict(plan)}

    def measure(kind, **kwargs):
        result = run_isolated(kind, **kwargs)
        echo(_describe(kind, kwargs, result))
        return result

    results["ceiling"] = measure("ceiling", n=2048 if plan.encoder else 4096)
    results["compare"] = measure("compare", size=plan.reference_size,
                                 batch_size=plan.reference_batch, precisions=list(plan.precisions),
                                 rounds=plan.rounds, steps=3, encoder=plan.encoder)
    results["reference_memory"] = measure("reference_memory", size=plan.reference_size,
                                          batch_size=plan.reference_batch)
    results["tasks"] = {}
    for task in plan.tasks:
        common = {"task": task, "size": plan.sizes[task], "batch_size": plan.batches[task]}
        row = {"model": measure("model", precision="float32", steps=plan.steps,
                                encoder=plan.encoder, **common),
               "pipeline": measure("pipeline", steps=max(plan.steps, 5), **common),
               "end_to_end": {}}
        for precision in plan.precisions:
            row["end_to_end"][precision] = measure("end_to_end", precision=precision,
                                                   steps=plan.steps, encoder=plan.encoder,
                                                   **common)
        results["tasks"][task] = row
    results["scaling"] = [measure("scaling", volumes=n) for n in plan.scaling_volumes]
    results["workers"] = [measure("workers", workers=n, steps=4 * plan.steps) for n in (1, 2)]
    results["targets"] = check_targets(results)
    return results


def _machine():
    return {"platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}


def _describe(kind, kwargs, result):
    label = " ".join(f"{k}={v}" for k, v in kwargs.items() if k in ("task", "size", "batch_size",
                                                                     "precision", "volumes"))
    if "error" in result:
        return f"{kind:<16} {label}: FAILED: {result['error']}"
    figures = [f"{key}={result[key]:.3g}" for key in
               ("gflops", "examples_per_sec", "epoch_sec", "peak_rss_mb") if key in result]
    return f"{kind:<16} {label} " + " ".join(figures)


def _rate(result):
    return None if result is None or "error" in result else result.get("examples_per_sec")


def _ratio(a, b):
    return None if a is None or b is None or not b else a / b


def check_targets(results):
    """The project's performance targets, each with its measured value and whether it is met.

    - rotation end to end, best precision: >= 1.25x the bare-Keras float32 rate;
    - rotation end to end, float32: >= 0.95x the bare-Keras rate;
    - every task: end-to-end rate >= 0.9x its model-only rate (the pipeline keeps up);
    - peak memory of the largest scaling epoch within 10 % of the smallest's;
    - peak memory of our rotation step within 1.1x the bare-Keras one's.

    The bare-Keras rate is the one timed in turns with our model-only step
    (`compare`); end-to-end runs are separate processes, so those ratios
    carry the machine's drift between the two.

    Returns:
        list of dicts with `target`, `value`, `goal` and `met` (None when a
        measurement failed).
    """
    targets = []

    def add(name, value, goal, higher=True):
        met = None if value is None else (value >= goal if higher else value <= goal)
        targets.append({"target": name, "value": value, "goal": goal, "met": met})

    reference = _rate(results["compare"].get("reference")) if "error" not in results["compare"] \
        else None
    rotation = results["tasks"].get("rotation")
    if rotation:
        e2e = rotation["end_to_end"]
        best = max((_rate(e2e[p]) or 0.0 for p in e2e), default=None)
        add("rotation end-to-end (best precision) / bare-Keras float32", _ratio(best, reference),
            1.25)
        add("rotation end-to-end float32 / bare-Keras float32",
            _ratio(_rate(e2e.get("float32")), reference), 0.95)
        ours = rotation["model"].get("peak_rss_mb")
        theirs = results["reference_memory"].get("peak_rss_mb")
        if results["plan"]["sizes"]["rotation"] == results["plan"]["reference_size"]:
            add("peak RSS: our rotation step / bare-Keras", _ratio(ours, theirs), 1.1,
                higher=False)
    for task, row in results["tasks"].items():
        add(f"{task}: end-to-end float32 / model-only float32",
            _ratio(_rate(row["end_to_end"].get("float32")), _rate(row["model"])), 0.9)
    scaling = [s for s in results["scaling"] if "error" not in s]
    if len(scaling) >= 2:
        add(f"peak RSS: {scaling[-1]['volumes']} / {scaling[0]['volumes']} volumes",
            _ratio(scaling[-1]["peak_rss_mb"], scaling[0]["peak_rss_mb"]), 1.1, higher=False)
    return targets


# --- writing ------------------------------------------------------------------------------------

def flat_rows(results):
    """One CSV row per measurement: kind, task, size, batch, precision and its figures."""
    rows = [{"kind": "ceiling", **results["ceiling"]}]
    compare = results["compare"]
    for name in ("reference", *_precisions(results)):
        if name in compare:
            rows.append({"kind": "compare", "task": "rotation", "size": compare["size"],
                         "batch_size": compare["batch_size"],
                         "precision": "float32 (bare Keras)" if name == "reference" else name,
                         **compare[name]})
    rows.append({"kind": "reference_memory", **results["reference_memory"]})
    for row in results["tasks"].values():
        rows.append(row["model"])
        rows.append(row["pipeline"])
        rows.extend(row["end_to_end"].values())
    rows.extend(results["scaling"])
    rows.extend({"kind": "workers", **w} for w in results.get("workers", []))
    if results.get("inference"):
        rows.append({"kind": "inference", **results["inference"]})
    return rows


def markdown_report(results):
    """The suite's tables in Markdown."""
    ceiling = results["ceiling"].get("gflops")
    lines = ["# Performance suite", "",
             f"Machine: {results['machine']['platform']}, {results['machine']['cpu_count']} CPUs. "
             f"float32 matmul ceiling: {_fmt(ceiling, '.0f')} GFLOP/s.", "",
             "## Our step against the same model in bare Keras (timed in turns)", "",
             "| model | precision | step s (median) | examples/s | vs bare Keras |",
             "|---|---|---:|---:|---:|"]
    compare = results["compare"]
    mixed = _precisions(results)[1]
    for name in ("reference", *_precisions(results)):
        if name in compare:
            r = compare[name]
            lines.append(f"| {'bare Keras' if name == 'reference' else 'ssl3d rotation'} | "
                         f"{'float32' if name == 'reference' else name} | "
                         f"{_fmt(r['median_step_sec'], '.3f')} | {_fmt(r['examples_per_sec'], '.2f')} | "
                         f"{_fmt(r.get('rate_vs_reference', 1.0), '.2f')}x |")
    lines += ["", "## Per task", "",
              "| task | input | batch | model step s | model ex/s | GFLOP/step | GFLOP/s | MFU | "
              f"pipeline ex/s | end-to-end ex/s f32 | end-to-end ex/s {_short(mixed)} | "
              "peak RSS MiB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for task, row in results["tasks"].items():
        m, p, e = row["model"], row["pipeline"], row["end_to_end"]
        mfu = _ratio(m.get("achieved_gflops"), ceiling)
        lines.append(
            f"| {task} | {m.get('size')}^3 | {m.get('batch_size')} | "
            f"{_fmt(m.get('median_step_sec'), '.3f')} | {_fmt(_rate(m), '.2f')} | "
            f"{_fmt((m.get('step_flops') or 0) / 1e9, '.1f')} | {_fmt(m.get('achieved_gflops'), '.0f')} | "
            f"{_fmt(mfu, '.0%')} | {_fmt(_rate(p), '.1f')} | {_fmt(_rate(e.get('float32')), '.2f')} | "
            f"{_fmt(_rate(e.get(mixed)), '.2f')} | {_fmt(m.get('peak_rss_mb'), '.0f')} |")
    lines += ["", "## Scaling: one epoch streamed from shards", "",
              "| volumes | epoch s | s per volume | peak RSS MiB |", "|---:|---:|---:|---:|"]
    for s in results["scaling"]:
        lines.append(f"| {s.get('volumes')} | {_fmt(s.get('epoch_sec'), '.1f')} | "
                     f"{_fmt(s.get('sec_per_volume'), '.3f')} | {_fmt(s.get('peak_rss_mb'), '.0f')} |")
    workers = [w for w in results.get("workers", []) if "error" not in w]
    if workers:
        lines += ["", "## Loopback workers on this one machine (rotation, reduced encoder)", "",
                  "| worker processes | global batch | global examples/s | vs 1 |",
                  "|---:|---:|---:|---:|"]
        base = workers[0]["examples_per_sec"]
        lines += [f"| {w['workers']} | {w['batch_size']} | {_fmt(w['examples_per_sec'], '.1f')} | "
                  f"{_fmt(_ratio(w['examples_per_sec'], base), '.2f')} |" for w in workers]
    inference = results.get("inference")
    if inference:
        lines += ["", "## Inference: whole volumes by sliding windows (encoder + U-Net decoder)", "",
                  "| volume | window | overlap | windows per volume | s per volume | "
                  "volumes/s | windows/s |", "|---:|---:|---:|---:|---:|---:|---:|",
                  f"| {inference['size']}^3 | {inference['window']}^3 | {inference['overlap']} | "
                  f"{inference['windows']} | {_fmt(inference['median_volume_sec'], '.2f')} | "
                  f"{_fmt(inference['volumes_per_sec'], '.3f')} | "
                  f"{_fmt(inference['windows_per_sec'], '.1f')} |"]
    lines += ["", "## Targets", "", "| target | measured | goal | met |", "|---|---:|---:|---|"]
    for t in results.get("targets") or check_targets(results):
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {_fmt(t['value'], '.2f')} | {t['goal']} | {met} |")
    failed = [r for r in flat_rows(results) if "error" in r]
    if failed:
        lines += ["", "## Failed measurements", ""]
        lines += [f"- {r.get('kind')} {r.get('task', '')}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def _precisions(results):
    return tuple(results["plan"].get("precisions", ("float32", "mixed_bfloat16")))


def _short(precision):
    return {"mixed_bfloat16": "bf16", "mixed_float16": "f16", "float32": "f32"}[precision]


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def plot_speed(results, path):
    """Bar charts: per-task examples/s (model-only, pipeline, end to end) and ours vs bare Keras."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    tasks = list(results["tasks"])
    mixed = _precisions(results)[1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.2
    series = [("model only", lambda r: _rate(r["model"])),
              ("pipeline only", lambda r: _rate(r["pipeline"])),
              ("end to end f32", lambda r: _rate(r["end_to_end"].get("float32"))),
              (f"end to end {_short(mixed)}", lambda r: _rate(r["end_to_end"].get(mixed)))]
    for i, (label, get) in enumerate(series):
        values = [get(results["tasks"][t]) or 0.0 for t in tasks]
        left.bar([x + (i - 1.5) * width for x in range(len(tasks))], values, width, label=label)
    left.set_xticks(range(len(tasks)), [f"{t}\n{results['tasks'][t]['model'].get('size')}^3"
                                         for t in tasks])
    left.set_yscale("log")
    # Plain numbers on the log axis (the default mathtext labels need fonts a
    # minimal install lacks, and matplotlib then logs a line per missing font).
    left.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    left.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.set_ylabel("examples / s (log)")
    left.legend(fontsize=8)
    left.set_title("Per task")
    compare = results["compare"]
    names = [n for n in ("reference", *_precisions(results)) if n in compare]
    right.bar(range(len(names)), [compare[n]["examples_per_sec"] for n in names],
              color=["grey", "tab:blue", "tab:orange"][:len(names)])
    right.set_xticks(range(len(names)), ["bare Keras\nf32" if n == "reference" else
                                         f"ours\n{_short(n)}" for n in names])
    right.set_title(f"Rotation {compare.get('size')}^3 x {compare.get('batch_size')}")
    right.set_ylabel("examples / s")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_speed_report(results, out_dir):
    """Write `speed.json`, `speed.csv`, `speed.md` and `speed.png` to `out_dir`; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, f"speed.{name}") for name in ("json", "csv", "md", "png")}
    write_json_atomic(paths["json"], results, default=str)
    rows = flat_rows(results)
    columns = sorted({key for row in rows for key in row if not isinstance(row[key], dict)},
                     key=lambda k: (k not in ("kind", "task", "size", "batch_size", "precision"), k))
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v
                             for k, v in row.items() if k in columns})
    write_text_atomic(paths["md"], markdown_report(results))
    plot_speed(results, paths["png"])
    return paths
