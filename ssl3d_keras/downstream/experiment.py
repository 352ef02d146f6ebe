"""The paper's data-efficiency experiment: pretrained against scratch and 2D, by label fraction.

For every proxy task the experiment pretrains an encoder in 3D and, on request,
the same task in 2D on slices (or takes encoders the user names), then
fine-tunes each of them and a scratch encoder of the same architecture at every
label fraction and repeat, and scores all of them on one fixed test split:

```
OUT/phantoms/, OUT/prepared/    the labelled data (phantoms unless --data)
OUT/pretrain/<task>-<d>d/       pretraining runs (phantoms seeded apart from the labelled ones)
OUT/encoders/<task>-<d>d/       their exports
OUT/cells/<method>/f<fraction>-r<repeat>/   one fine-tuning run per cell
OUT/results.csv                 one row per cell and test case
OUT/results.md, OUT/dice.png    the table (mean +- sd; paired difference to scratch) and plot

Methods: `<task>-3d`, `<task>-2d` (slice-wise 2D model, scored on the same 3D
cases), encoders named by the user, `scratch` (3D) and, with 2D methods,
`scratch-2d`, each from fresh weights of the same architecture.
OUT/experiment.json             the resolved experiment settings
```

Finished cells are never recomputed: a killed experiment continues where it
stopped, and a cell interrupted half-way resumes from its checkpoint.
"""

import copy
import dataclasses
import math
import shutil
import time
from pathlib import Path

from ssl3d_keras.atomic import write_json_atomic, write_text_atomic
from ssl3d_keras.config import closest, from_dict, to_dict
from ssl3d_keras.errors import ConfigError

__all__ = ["ExperimentConfig", "run_experiment", "quick_experiment", "methods_of"]

TASKS = ("cpc", "exemplar", "jigsaw", "rotation", "rpl")


@dataclasses.dataclass
class ExperimentConfig:
    """What the data-efficiency experiment compares.

    Args:
        tasks: proxy tasks to pretrain (each a 3D method, and a 2D one with
            `include_2d`).
        include_2d: also pretrain each task on 2D slices and fine-tune a
            slice-wise 2D model (the paper's 2D baseline).
        fractions: label fractions, each in (0, 1].
        repeats: repeats per fraction: each draws another label subset and
            another seed (initialisation, patch order).
        encoders: extra methods, name -> encoder handle (pretrained elsewhere);
            a name ending in "-2d" is fine-tuned slice-wise.
        pretrain_steps: steps of each pretraining (the demonstration config of
            `ssl3d pretrain TASK` otherwise).
        pretrain_phantoms: phantoms pretraining sees (seeded apart from the
            labelled ones), when the data is phantoms.
        pretrain_data: a dataset to pretrain on instead (unlabelled use).
        finetune: `FinetuneConfig` fields shared by every cell (steps,
            schedule, patch size, data, split, ...).
    """

    tasks: list = dataclasses.field(default_factory=lambda: ["rotation"])
    include_2d: bool = True
    fractions: list = dataclasses.field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    repeats: int = 2
    encoders: dict = dataclasses.field(default_factory=dict)
    pretrain_steps: int = 300
    pretrain_phantoms: dict = dataclasses.field(
        default_factory=lambda: {"n": 32, "size": 48, "seed": 0})
    pretrain_data: str | None = None
    finetune: dict = dataclasses.field(default_factory=dict)


def quick_experiment():
    """The `--quick` experiment: the full experiment's settings, for rotation in 3D against
    scratch at 10 % and 100 % of the labels, one repeat (about 5 minutes on two CPU cores).

    It uses the same pretraining and fine-tuning budget as the full experiment so that its
    cells are a subset of it: with half the fine-tuning steps the ranking changed
    (docs/RESULTS.md).
    """
    return ExperimentConfig(tasks=["rotation"], include_2d=False, fractions=[0.1, 1.0],
                            repeats=1)


def _validate(config):
    for task in config.tasks:
        if task not in TASKS:
            raise ConfigError("tasks", f"unknown task {task!r}{closest(task, TASKS)}; choose "
                              f"from {list(TASKS)}. Received: {config.tasks}")
    if not config.fractions or any(not 0 < float(f) <= 1 for f in config.fractions):
        raise ConfigError("fractions", f"each must be in (0, 1]. Received: {config.fractions}")
    if int(config.repeats) < 1:
        raise ConfigError("repeats", f"must be >= 1. Received: {config.repeats}")
    for name in config.encoders:
        if name in ("scratch", "scratch-2d") or any(name == f"{t}-{d}d" for t in config.tasks for d in (2, 3)):
            raise ConfigError("encoders", f"the name {name!r} is taken by a built-in method. "
                              f"Received: {sorted(config.encoders)}")
    return config


def methods_of(config):
    """The compared methods, in table order: each task's 3D (and 2D), named encoders, scratch.

    With 2D methods there is also `scratch-2d` (a slice-wise 2D model from fresh
    weights), which separates what 2D pretraining buys from what a 2D model costs.
    """
    methods = []
    for task in config.tasks:
        methods.append(f"{task}-3d")
        if config.include_2d:
            methods.append(f"{task}-2d")
    return [*methods, *config.encoders, "scratch", *(["scratch-2d"] if config.include_2d
                                                      else [])]


def _pretrain_encoder(task, dim, config, finetune, out_dir, log):
    """Pretrain (or reuse) one encoder and export it; returns the export folder."""
    from ssl3d_keras.export.exporter import export_run
    from ssl3d_keras.training import pretrain
    from ssl3d_keras.training.config import quick_config

    name = f"{task}-{dim}d"
    run_dir = out_dir / "pretrain" / name
    export_dir = out_dir / "encoders" / name
    if (export_dir / "preset" / "config.json").is_file():
        return export_dir
    data = quick_config(task)
    data["steps"] = int(config.pretrain_steps)
    data.setdefault("data", {})
    data["data"]["dim"] = dim
    data["data"]["slice_axis"] = int(finetune.data.slice_axis)
    if config.pretrain_data is not None:
        data["data"]["path"] = str(config.pretrain_data)
    else:
        phantoms = dict(config.pretrain_phantoms)
        phantoms.setdefault("channels", finetune.data.phantoms.channels)
        data["data"]["phantoms"] = phantoms
        if "size" in phantoms and data["data"].get("input_size"):
            data["data"]["input_size"] = min(data["data"]["input_size"], int(phantoms["size"]))
    # Skips and decoder need a common architecture: the scratch encoder's.
    data["encoder"] = dict(finetune.scratch_encoder)
    resume = (run_dir / "checkpoints" / "checkpoint").is_file()
    log(f"pretraining {name} ({data['steps']} steps){' (resuming)' if resume else ''}")
    started = time.perf_counter()
    summary = pretrain(None if resume else data, run_dir, resume=resume, verbose=False)
    log(f"  {name}: proxy accuracy {summary['final_accuracy']:.3f} (chance "
        f"{summary['chance_accuracy']:.3f}) in {time.perf_counter() - started:.0f} s")
    export_run(run_dir, export_dir, formats="preset")
    return export_dir


def _cell_config(base, method, handle, fraction, repeat):
    """The (unvalidated) config of one cell; `finetune` validates it, resolving
    `schedule="auto"` for this cell's encoder."""
    config = copy.deepcopy(base)
    # A repeat draws another label subset and another initialisation and patch order, so
    # the spread over repeats includes training noise (at 100 % the subsets coincide).
    config.seed = int(base.seed) + int(repeat)
    config.split.label_fraction = float(fraction)
    config.split.repeat = int(repeat)
    if method in ("scratch", "scratch-2d"):
        config.encoder, config.scratch = None, True
        config.data.dim = 2 if method == "scratch-2d" else 3
    else:
        config.encoder, config.scratch = str(handle), False
        config.data.dim = 2 if method.endswith("-2d") else 3
    return config


def _run_cell(config, cell_dir):
    from ssl3d_keras.downstream.finetune import finetune
    from ssl3d_keras.training.checkpoints import read_json

    if (cell_dir / "summary.json").is_file() and (cell_dir / "metrics.json").is_file():
        return read_json(cell_dir / "metrics.json")
    resume = (cell_dir / "checkpoints" / "checkpoint").is_file()
    if not resume and cell_dir.exists():
        shutil.rmtree(cell_dir)  # a cell killed before its first checkpoint starts afresh
    finetune(None if resume else config, cell_dir, resume=resume, verbose=False)
    return read_json(cell_dir / "metrics.json")


def _fraction_name(fraction):
    return f"{float(fraction):g}"


def write_report(out_dir, rows, methods=None):
    """Write `results.md` and `dice.png` from the rows so far; returns the Markdown."""
    from ssl3d_keras.downstream.report import markdown_report, plot_fractions

    if not rows:
        return ""
    text = markdown_report(rows, metric="dice_mean", baseline="scratch")
    write_text_atomic(out_dir / "results.md", text + "\n")
    plot_fractions(rows, out_dir / "dice.png", metric="dice_mean",
                   title="Test Dice (mean over foreground classes) by label fraction")
    return text


def run_experiment(config, out_dir, *, verbose=True):
    """Run (or continue) the data-efficiency experiment.

    Args:
        config: an `ExperimentConfig` or a dict of its fields.
        out_dir: the experiment folder (see the module docstring).
        verbose: print one line per pretraining and per cell, with time left.

    Returns:
        dict: `results_csv`, `report` (Markdown), `plot`, `cells` (done, total).

    Raises:
        ConfigError: an invalid setting, before anything runs.
    """
    from ssl3d_keras.downstream.config import FinetuneConfig
    from ssl3d_keras.downstream.dataset import open_labelled, resolve_dataset
    from ssl3d_keras.downstream.finetune import as_config
    from ssl3d_keras.downstream.report import append_rows, done_cells, read_rows

    if not isinstance(config, ExperimentConfig):
        config = from_dict(ExperimentConfig, config or {})
    config = _validate(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(message):
        if verbose:
            print(message, flush=True)

    # Cells start from the settings as given (schedule "auto" is resolved per cell); the
    # base is validated here only to fail before any pretraining.
    cells_base = from_dict(FinetuneConfig, config.finetune, "finetune")
    finetune = as_config({**copy.deepcopy(config.finetune), "scratch": True})
    resolve_dataset(finetune.data, out_dir, progress=verbose)
    cells_base.data.prepared = finetune.data.prepared
    open_labelled(finetune.data, finetune.task)  # fails now, not after pretraining
    write_json_atomic(out_dir / "experiment.json", {**to_dict(config),
                                                    "finetune_resolved": to_dict(finetune)})

    handles = dict(config.encoders)
    for task in config.tasks:
        for dim in ((3, 2) if config.include_2d else (3,)):
            handles[f"{task}-{dim}d"] = _pretrain_encoder(task, dim, config, finetune,
                                                          out_dir, log)

    results = out_dir / "results.csv"
    rows = read_rows(results) if results.is_file() else []
    done = done_cells(rows)
    methods = methods_of(config)
    fractions = sorted(float(f) for f in config.fractions)
    cells = [(m, f, r) for f in fractions for r in range(int(config.repeats)) for m in methods]
    todo = [c for c in cells if c not in done]
    log(f"{len(cells)} cells ({len(methods)} methods x {len(fractions)} fractions x "
        f"{config.repeats} repeats): {len(cells) - len(todo)} done, {len(todo)} to run")
    started = time.perf_counter()
    for index, (method, fraction, repeat) in enumerate(todo, start=1):
        cell_dir = out_dir / "cells" / method / f"f{_fraction_name(fraction)}-r{repeat}"
        cell = _cell_config(cells_base, method, handles.get(method), fraction, repeat)
        metrics = _run_cell(cell, cell_dir)
        new = [{"method": method, "fraction": fraction, "repeat": repeat, **case}
               for case in metrics["cases"]]
        append_rows(results, new)
        rows.extend(new)
        dice = metrics["summary"].get("dice_mean", {}).get("mean", math.nan)
        elapsed = time.perf_counter() - started
        left = elapsed / index * (len(todo) - index)
        log(f"[{len(cells) - len(todo) + index}/{len(cells)}] {method} at {fraction:g} "
            f"(repeat {repeat}): test Dice {dice:.3f}; about {left / 60:.0f} min left")
        write_report(out_dir, read_rows(results))
    text = write_report(out_dir, read_rows(results))
    return {"results_csv": str(results), "report": text, "plot": str(out_dir / "dice.png"),
            "cells": (len(cells), len(cells))}
