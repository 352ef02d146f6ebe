"""`ssl3d benchmark`: measure pipeline throughput and training-step speed on this machine."""


import click

from ssl3d_keras.atomic import write_json_atomic


@click.group(invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--suite", default="pipeline", show_default=True,
              type=click.Choice(["pipeline", "train", "all"]),
              help="pipeline: phantom generation, shard write/read and tf.data crops/s; "
                   "train: training-step speed of a proxy task; all: both.")
@click.option("--out", "out_json", default=None, type=click.Path(dir_okay=False),
              help="Also write the results as JSON to this file.")
@click.option("--n-volumes", default=8, show_default=True, type=click.IntRange(min=1),
              help="Phantoms generated and written to temporary shards (pipeline suite).")
@click.option("--size", default=48, show_default=True, type=click.IntRange(min=8),
              help="Phantom edge length in voxels (pipeline suite).")
@click.option("--crop", default=32, show_default=True, type=click.IntRange(min=4),
              help="Crop edge of the pipeline, and the training input edge (train suite).")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1),
              help="Examples per batch.")
@click.option("--steps", default=10, show_default=True, type=click.IntRange(min=1),
              help="Batches (or training steps) per timed run.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
              help="Timed runs per figure after a warm-up; the median is reported (pipeline).")
@click.option("--task", default="rotation", show_default=True,
              help="Proxy task of the train suite.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of data and pipeline.")
@click.option("--compare", is_flag=True,
              help="Train suite: time every precision (float32, mixed_bfloat16) with XLA off and "
                   "on, in one run, and report each speed-up over float32 without XLA.")
@click.option("--paper-encoder", is_flag=True,
              help="Train suite: the paper's U-Net encoder (16/32/64/128, 256) instead of the "
                   "reduced one (depth 2, base 8).")
@click.pass_context
def benchmark(ctx, suite, out_json, n_volumes, size, crop, batch_size, steps, repeats, task,
              seed, compare, paper_encoder):
    """Measure speed on this machine, or run the data-efficiency experiment.

    `ssl3d benchmark data-efficiency --help` describes the paper's label-fraction
    experiment (pretrained vs scratch vs 2D); the options below time the data
    pipeline and a training step.

    Figures are medians of timed repetitions after a warm-up; compare ratios
    measured in one run, since a shared machine varies between runs.

    Examples:

        ssl3d benchmark --suite all --out results.json

        ssl3d benchmark --suite train --compare --crop 64 --paper-encoder
    """
    if ctx.invoked_subcommand is not None:
        return  # `ssl3d benchmark data-efficiency ...`
    results = {}
    if suite in ("pipeline", "all"):
        from ssl3d_keras.benchmark.pipeline import format_pipeline_results, measure_pipeline

        click.echo("Running the pipeline suite ...")
        results["pipeline"] = measure_pipeline(n_volumes=n_volumes, size=size, crop=crop,
                                               batch_size=batch_size, steps=steps, seed=seed,
                                               repeats=repeats)
        click.echo(format_pipeline_results(results["pipeline"]))
    if suite in ("train", "all"):
        from ssl3d_keras.benchmark import train

        click.echo("Running the train suite ...")
        kwargs = {"task": task, "size": crop, "batch_size": batch_size, "steps": steps}
        if paper_encoder:
            kwargs["encoder"] = {}
        if compare:
            results["train"] = train.compare_training(**kwargs)
        else:
            results["train"] = [train.measure_training(**kwargs)]
        click.echo(train.format_results(results["train"]))
    if out_json:
        path = write_json_atomic(out_json, results, default=str)
        click.echo(f"Wrote {path}")


def _add_subcommands():
    from ssl3d_keras.cli.data_efficiency import data_efficiency
    from ssl3d_keras.cli.speed import speed

    benchmark.add_command(data_efficiency)
    benchmark.add_command(speed)


_add_subcommands()
