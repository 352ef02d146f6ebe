"""`ssl3d benchmark speed`: the performance suite (step cost, pipeline, memory, scaling)."""

import click


def _names(text):
    return [v.strip() for v in text.split(",") if v.strip()] if text else []


@click.command("speed", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--tasks", default=None, metavar="T1,T2",
              help="Proxy tasks to measure (default: all five).")
@click.option("--sizes", default=None, metavar="N[,N...]",
              help="Input edge: one for every task, or one per task in --tasks order. Default: 64, "
                   "or the smallest edge at which the paper encoder runs the task (jigsaw and "
                   "RPL 96, CPC 128).")
@click.option("--batch-size", default=None, type=click.IntRange(min=1),
              help="One batch size for every task. Default: the authors' (rotation 4, jigsaw 8, "
                   "RPL 32, CPC 1, exemplar 2).")
@click.option("--quick", is_flag=True,
              help="The reduced encoder at 32^3, batch 2, few steps and 10/40 scaling volumes: "
                   "checks the suite runs (a few minutes), not what a step costs.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for speed.json, speed.csv, speed.md and speed.png.")
def speed(tasks, sizes, batch_size, quick, out_dir):
    """Measure what a pretraining step costs on this machine, and why.

    One run measures the float32 matmul ceiling; the paper's encoder with the
    rotation head written directly in Keras 3, timed in turns with ours (float32
    and mixed bfloat16); per task, the model-only step (FLOPs, GFLOP/s, model
    FLOP utilisation), the input pipeline alone and the end-to-end rate through
    pretraining, with peak memory; and one epoch over 10, 100 and 1000 phantoms
    streamed from shards; and sliding-window inference of the encoder with the
    U-Net decoder over whole volumes. Each measurement runs in its own process
    (inference in this one). The targets
    (docs/PERFORMANCE.md) are checked and printed at the end.

    Examples:

        ssl3d benchmark speed --out runs/speed

        ssl3d benchmark speed --tasks rotation --sizes 64 --out runs/speed-rot

        ssl3d benchmark speed --quick --out runs/speed-quick
    """
    from ssl3d_keras.benchmark.speed import TASKS
    from ssl3d_keras.benchmark.speed_suite import make_plan, run_speed_suite, write_speed_report

    plan = make_plan(_names(tasks) or TASKS,
                     sizes=[int(s) for s in _names(sizes)] if sizes else None,
                     batch_size=batch_size, quick=quick)
    click.echo(f"Measuring {', '.join(plan.tasks)} (each measurement in its own process) ...")
    results = run_speed_suite(plan, echo=click.echo)
    # Inference lives in the downstream room, above the benchmark's: it is added here.
    from ssl3d_keras.downstream.throughput import sliding_window_throughput

    settings = {"size": 32, "window": 16, "repeats": 1} if quick else {}
    results["inference"] = sliding_window_throughput(encoder=plan.encoder, **settings)
    click.echo(f"{'inference':<16} size={results['inference']['size']} "
               f"volumes_per_sec={results['inference']['volumes_per_sec']:.3g}")
    paths = write_speed_report(results, out_dir)
    click.echo("")
    for target in results["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        value = "-" if target["value"] is None else f"{target['value']:.2f}"
        click.echo(f"{verdict:>12}  {target['target']}: {value} (goal {target['goal']})")
    click.echo(f"Wrote {paths['md']} (and .json, .csv, .png)")
