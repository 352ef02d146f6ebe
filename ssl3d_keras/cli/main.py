"""Entry point of the `ssl3d` command.

Each subcommand lives in its own module and is imported only when it runs, so
`ssl3d --help` answers without importing TensorFlow.
"""

import contextlib
import importlib
import logging
import os
import sys
import warnings

import click

from ssl3d_keras import __version__
from ssl3d_keras.errors import Ssl3dError

# Before TensorFlow loads: its C++ logging reads this once (INFO lines otherwise).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Subcommand name -> "module:attribute", with the one-line help shown by --help.
COMMANDS = {
    "pretrain": ("ssl3d_keras.cli.pretrain:pretrain", "Pretrain an encoder with a proxy task."),
    "finetune": ("ssl3d_keras.cli.finetune:finetune", "Fine-tune an encoder downstream."),
    "predict": ("ssl3d_keras.cli.predict:predict", "Segment new scans with a fine-tuned model."),
    "export": ("ssl3d_keras.cli.export:export", "Export a run as preset, SavedModel, TF Hub archive."),
    "prepare": ("ssl3d_keras.cli.prepare:prepare", "Preprocess a dataset into TFRecord shards."),
    "phantoms": ("ssl3d_keras.cli.phantoms:phantoms", "Write synthetic phantoms as a Decathlon dataset."),
    "show": ("ssl3d_keras.cli.show:show", "Draw phantoms or one example of a proxy task to a PNG."),
    "benchmark": ("ssl3d_keras.cli.benchmark:benchmark", "Measure pipeline and training speed here."),
    "data-service": ("ssl3d_keras.cli.data_service:data_service",
                     "Run the input pipeline on tf.data service workers."),
    "zoo": ("ssl3d_keras.cli.zoo:zoo", "List, describe and build the pretrained encoders."),
    "info": ("ssl3d_keras.cli.info:info", "Print versions, devices and the registered tasks."),
}


def import_tensorflow_quietly():
    """Import TensorFlow with its native start-up lines (oneDNN, CUDA probing) silenced.

    Those lines are written to file descriptor 2 before TensorFlow's logging
    is initialised, so TF_CPP_MIN_LOG_LEVEL cannot hide them; they alarm users
    on every CPU-only run. Python errors raised by the import still surface.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow

            # Probing for CUDA devices logs an error line on machines without a GPU.
            tensorflow.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def show_library_log(quiet=False):
    """Show the library's INFO messages (the `ssl3d_keras` logger) on stdout while a command runs.

    The library logs instead of printing; a command decides what its user sees.
    With `quiet`, only warnings and errors are shown.
    """
    logger = logging.getLogger("ssl3d_keras")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        handler.flush()
        logger.removeHandler(handler)
        logger.setLevel(level)


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def resolve_command(self, ctx, args):
        wants_help = any(a in ("-h", "--help") for a in args)
        if not wants_help and not ctx.params.get("debug"):
            import_tensorflow_quietly()
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, help_text) for name, (_, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        debug = ctx.params.get("debug")
        with warnings.catch_warnings():
            if not debug:
                # One plain line per warning for people at a terminal, not a source
                # excerpt; shown here whatever filters or recorders the host installed.
                warnings.simplefilter("default")
                for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                                 ResourceWarning):  # hidden by Python's own defaults too
                    warnings.simplefilter("ignore", category)
                warnings.showwarning = _show_warning
            return self._invoke(ctx, debug)

    def _invoke(self, ctx, debug):
        try:
            return super().invoke(ctx)
        except Ssl3dError as e:
            if debug:
                raise
            click.echo(f"Error: {e}", err=True)
            sys.exit(2)
        except OSError as e:
            # A folder that cannot be written or read (permissions, a full disk) is the
            # machine's state, not a bug: one line naming the path, as for bad input.
            if debug:
                raise
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"Error: {where}{e.strerror or e}", err=True)
            sys.exit(1)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    click.echo(f"Warning: {message}", err=True)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ssl3d")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors in your input.")
@click.pass_context
def cli(ctx, debug):
    """3D self-supervised pretraining for medical imaging (Taleb et al., NeurIPS 2020).

    With no --data, `pretrain` runs on synthetic phantoms, so a first run needs
    no download:

        ssl3d pretrain rotation --out runs/rot
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
