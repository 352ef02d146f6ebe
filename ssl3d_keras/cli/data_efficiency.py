"""`ssl3d benchmark data-efficiency`: the paper's label-fraction experiment."""

import click


def _floats(ctx, param, value):
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers. Received: {value!r}",
                                 ctx=ctx, param=param) from None


def _names(ctx, param, value):
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _encoders(ctx, param, values):
    named = {}
    for value in values:
        name, sep, handle = value.partition("=")
        if not sep or not name or not handle:
            raise click.BadParameter(f"expected NAME=HANDLE. Received: {value!r}", ctx=ctx,
                                     param=param)
        named[name] = handle
    return named


@click.command("data-efficiency", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", "data_path", type=click.Path(exists=True),
              help="Labelled dataset (prepared folder or raw Decathlon/BraTS/folder/CSV). "
                   "Default: labelled phantoms.")
@click.option("--pretrain-data", type=click.Path(exists=True),
              help="Unlabelled dataset to pretrain on. Default: phantoms seeded apart from "
                   "the labelled ones.")
@click.option("--tasks", callback=_names, metavar="TASK,...",
              help="Proxy tasks to pretrain (cpc, exemplar, jigsaw, rotation, rpl). "
                   "Default: rotation.")
@click.option("--no-2d", is_flag=True, help="Leave out the 2D-slice pretraining baseline.")
@click.option("--fractions", callback=_floats, metavar="F,...",
              help="Label fractions. Default: 0.1,0.25,0.5,1.")
@click.option("--repeats", type=click.IntRange(min=1),
              help="Repeats per fraction, each with another label subset and seed. Default: 2.")
@click.option("--encoder", "encoders", multiple=True, callback=_encoders,
              metavar="NAME=HANDLE", help="Also compare an encoder pretrained elsewhere "
              "(a name ending in -2d runs slice-wise). Repeatable.")
@click.option("--pretrain-steps", type=click.IntRange(min=1),
              help="Steps of each pretraining. Default: 300.")
@click.option("--steps", type=click.IntRange(min=1),
              help="Fine-tuning steps of every cell (scratch gets the same). Default: 300.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Set a fine-tuning key of every cell, e.g. --set schedule=full "
                   "--set split.test_fraction=0.3. Repeatable.")
@click.option("--quick", is_flag=True,
              help="A small version with the full experiment's budget: rotation 3D vs scratch "
                   "at 10 % and 100 %, one repeat (about 5 minutes on two CPU cores).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Experiment folder: results.csv, results.md, dice.png, cells/, encoders/.")
@click.option("--quiet", is_flag=True, help="Only the final table.")
def data_efficiency(data_path, pretrain_data, tasks, no_2d, fractions, repeats, encoders,
                    pretrain_steps, steps, overrides, quick, out_dir, quiet):
    """Pretrained vs scratch vs 2D pretraining, by label fraction (the paper's experiment).

    Pretrains each task in 3D (and in 2D on slices), fine-tunes every method and
    a scratch encoder of the same architecture with the same step budget at each
    label fraction and repeat, scores all on one fixed test split (whole cases,
    sliding windows), and writes results.csv (a row per cell and case), results.md
    (mean +- sd, and the paired difference to scratch with a 95 % bootstrap
    interval) and dice.png. Run it again with the same --out to continue: finished
    cells are not recomputed.

    \b
    Examples:
      ssl3d benchmark data-efficiency --quick --out runs/de-quick
      ssl3d benchmark data-efficiency --tasks rotation,rpl --repeats 3 --out runs/de
      ssl3d benchmark data-efficiency --data Task07_Pancreas --encoder rot=exports/rot --no-2d --out runs/de-panc
    """
    from pathlib import Path

    from ssl3d_keras.config import apply_overrides, from_dict
    from ssl3d_keras.downstream.experiment import (
        ExperimentConfig,
        quick_experiment,
        run_experiment,
    )

    config = quick_experiment() if quick else ExperimentConfig()
    finetune = dict(config.finetune)
    if data_path is not None:
        finetune.setdefault("data", {})["path"] = str(Path(data_path).resolve())
    if steps is not None:
        finetune["steps"] = steps
    apply_overrides(finetune, overrides)
    config.finetune = finetune
    for key, value in (("tasks", tasks), ("fractions", fractions), ("repeats", repeats),
                       ("pretrain_steps", pretrain_steps)):
        if value is not None:
            setattr(config, key, value)
    if no_2d:
        config.include_2d = False
    if encoders:
        from ssl3d_keras.cli.finetune import resolve_encoder

        config.encoders = {name: resolve_encoder(handle) for name, handle in encoders.items()}
    if pretrain_data is not None:
        config.pretrain_data = str(Path(pretrain_data).resolve())
    config = from_dict(ExperimentConfig, vars(config))
    result = run_experiment(config, out_dir, verbose=not quiet)
    click.echo("")
    click.echo(result["report"])
    click.echo(f"\nresults: {result['results_csv']}\nplot:    {result['plot']}")
