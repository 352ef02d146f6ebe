"""`ssl3d pretrain`: pretrain an encoder with a proxy task.

A thin shell: `ssl3d_keras.training.assemble.assemble_config` puts the config
together (the zoo builds through the same function), `pretrain` runs it.
"""

import sys

import click

# Kept importable from here for code written against earlier versions.
from ssl3d_keras.training.assemble import (  # noqa: F401
    merge_config as apply_overrides_from,
)
from ssl3d_keras.training.assemble import reset_encoder_for_new_architecture  # noqa: F401

EXIT_INTERRUPTED = 130


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("task")
@click.option("--data", "data_path", type=click.Path(exists=True, file_okay=False),
              help="Prepared shard folder (with manifest.json), or a raw dataset (NIfTI folder, "
                   "Decathlon, BraTS) that is first prepared into OUT/prepared. "
                   "Default: synthetic phantoms (no download needed).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="A .toml or .json PretrainConfig (e.g. a zoo recipe). Options given on the "
                   "command line override it; keys it does not set keep the PretrainConfig "
                   "(paper) defaults. Default: the quick demonstration config.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Run directory for config.json, checkpoints/, metrics.csv, tensorboard/, "
                   "summary.json. Default: runs/TASK.")
@click.option("--steps", type=click.IntRange(min=1),
              help="Optimisation steps. Default: 300.")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Train for this many passes over the data instead of --steps "
                   "(volumes x crops per volume / batch size steps each).")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Global batch size, split evenly across replicas. Default: 16 (8 for "
                   "jigsaw and cpc).")
@click.option("--input-size", type=click.IntRange(min=1),
              help="Edge of the cube (or square) cropped from each volume for the task. "
                   "Default: 32 (48 for jigsaw and rpl); the 48^3 phantoms are enlarged "
                   "if this is bigger.")
@click.option("--dim", type=click.Choice(["2", "3"]),
              help="3 for volumes; 2 for images or 2D slices of volumes. Default: 3.")
@click.option("--seed", type=int, help="Seed of weights, dropout and data order. Default: 0.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its latest checkpoint, with its stored "
                   "config and the same data order. Only --steps/--epochs (to train longer, "
                   "or stop earlier but not before the step reached) and --learning-rate may "
                   "change; each change is warned about and recorded in config.json "
                   "(resumed_changes). Any other change is an error.")
@click.option("--learning-rate", type=float,
              help="Peak learning rate (optimizer.learning_rate). With --resume, the new rate "
                   "applies from the resumed step, e.g. to recover a run stopped on NaN. "
                   "Default: the config's (1e-4 for the paper settings).")
@click.option("--strategy", type=click.Choice(["auto", "default", "mirrored", "multiworker"]),
              help="Distribution: auto (MultiWorkerMirrored if TF_CONFIG is set, Mirrored on "
                   "several GPUs, else one device), default, mirrored, multiworker. "
                   "Default: auto.")
@click.option("--data-service", metavar="HOST:PORT",
              help="Run the input pipeline on tf.data service workers registered with this "
                   "dispatcher (`ssl3d data-service`; needs --data they can read). Same as "
                   "--set data.service=HOST:PORT.")
@click.option("--precision",
              type=click.Choice(["auto", "float32", "mixed_float16", "mixed_bfloat16"]),
              help="Compute precision: auto (mixed_float16 on GPU; on a CPU with native bfloat16, "
                   "mixed_bfloat16 for U-Net encoders of base_filters >= 16, else float32; "
                   "docs/PERFORMANCE.md), float32, mixed_float16 (GPU only; with loss "
                   "scaling), mixed_bfloat16. Default: auto.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Set any config key, e.g. --set encoder.depth=3 --set "
                   "optimizer.learning_rate=1e-3 --set task_config.grid=2. Repeatable.")
@click.option("--monitor-every", type=click.IntRange(min=1),
              help="Every N steps, score the proxy task on held-out volumes (monitor.csv, "
                   "TensorBoard) and keep the best checkpoint (ssl3d export --checkpoint best). "
                   "Default: off.")
@click.option("--probe", is_flag=True,
              help="With --monitor-every: also fit a frozen-encoder U-Net on a few labelled "
                   "phantoms (or monitor.probe_data) at each check and log its test Dice; the "
                   "best probe picks the best checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar or messages; only the final lines.")
def pretrain(task, data_path, config_file, out_dir, steps, epochs, batch_size, input_size, dim,
             seed, resume, learning_rate, strategy, data_service, precision, overrides,
             monitor_every, probe, quiet):
    """Pretrain an encoder with the proxy TASK (cpc, rotation, jigsaw, rpl, exemplar).

    With no options this is a quick demonstration on 16 synthetic phantoms that
    finishes in a few minutes on two CPU cores (a reduced encoder, small head,
    32^3 or 48^3 crops, 300 steps) and prints the proxy accuracy against chance.
    The paper's settings are in the zoo recipes (--config).
    Ctrl-C (or SIGTERM) saves a checkpoint at the next step and exits with
    status 130; continue with --resume (also to train longer: --steps, or with
    a new --learning-rate). One run writes into an --out at a time
    (OUT/run.lock). A NaN/Inf loss stops the run and keeps its last good
    checkpoint; --set on_nonfinite=skip undoes and counts such steps instead.

    \b
    Examples:
      ssl3d pretrain rotation --out runs/rot
      ssl3d pretrain jigsaw --data prepared/brats --steps 2000 --set encoder.depth=3
    """
    from pathlib import Path

    from ssl3d_keras.cli.main import show_library_log
    from ssl3d_keras.downstream.probe import pretrain_with_probe as run_pretrain
    from ssl3d_keras.errors import ConfigError, DataError
    from ssl3d_keras.training.assemble import assemble_config
    from ssl3d_keras.training.checkpoints import read_json
    from ssl3d_keras.training.rundir import RunDir

    out_dir = Path(out_dir or Path("runs") / task)
    run = RunDir(out_dir)
    if steps is not None and epochs is not None:
        raise ConfigError("steps", "give --steps or --epochs, not both. "
                          f"Received: --steps {steps} --epochs {epochs}")
    if resume and not run.is_run() and _is_chief():
        raise DataError(out_dir, "nothing to resume: no config.json in this folder. Start the run "
                        "without --resume, or point --out at the run to continue. "
                        f"Received: --resume --out {out_dir}")
    if not resume and run.has_checkpoints():
        raise ConfigError("out", f"{out_dir} already holds a run with checkpoints; pass --resume "
                          "to continue it, or choose another --out folder. "
                          f"Received: --out {out_dir}")
    if probe and monitor_every is None:
        raise ConfigError("monitor.probe", "--probe runs at the checks of --monitor-every N; "
                          "give both. Received: --probe without --monitor-every")
    if monitor_every is not None:
        overrides = (*overrides, f"monitor.every={monitor_every}")
    if probe:
        overrides = (*overrides, "monitor.probe=true")
    if data_service is not None:
        overrides = (*overrides, f"data.service={data_service}")
    config = assemble_config(
        task, config=config_file, stored=read_json(run.config) if resume and run.is_run() else None,
        data=data_path, steps=steps, epochs=epochs, overrides=overrides, batch_size=batch_size,
        input_size=input_size, dim=None if dim is None else int(dim), seed=seed,
        strategy=strategy, precision=precision, learning_rate=learning_rate)
    with show_library_log(quiet):
        summary = run_pretrain(config, out_dir, resume=resume, verbose=not quiet)

    click.echo(f"\nRun directory: {summary['run_dir']}")
    click.echo(f"  checkpoints: {summary['checkpoint_dir']} (latest: {summary['latest_checkpoint']})")
    click.echo(f"  metrics:     {summary['metrics_csv']}")
    click.echo(f"  tensorboard: tensorboard --logdir {summary['tensorboard_dir']}")
    click.echo(f"  summary:     {Path(summary['run_dir']) / 'summary.json'}")
    best = Path(summary["run_dir"]) / "best.json"
    if best.is_file():
        record = read_json(best)
        click.echo(f"  best:        step {record['step']} ({record['metric']} "
                   f"{record['score']:.3f}); monitor.csv has every check")
    if summary["final_accuracy"] is not None:
        click.echo(f"Final proxy accuracy {summary['final_accuracy']:.3f} (chance "
                   f"{summary['chance_accuracy']:.3f}), loss {summary['final_loss']:.4f}, after "
                   f"{summary['steps']} steps in {summary['wall_time_sec']:.0f} s")
    if summary["status"] == "interrupted":
        click.echo(f"Interrupted at step {summary['steps']}: saved {summary['latest_checkpoint']}. "
                   f"Resume with:\n  ssl3d pretrain {task} --out {out_dir} --resume")
        sys.exit(EXIT_INTERRUPTED)


def _is_chief():
    # A non-chief worker of a multi-worker run keeps its run in OUT/workers/..., so
    # OUT itself may hold nothing on its machine; the library checks that folder.
    from ssl3d_keras.training.strategy import worker_role

    return worker_role()[0]
