"""`ssl3d finetune`: downstream fine-tuning, not implemented in this version."""

import sys

import click

NOT_IMPLEMENTED = ("downstream fine-tuning is not implemented yet in this version; "
                   "see README roadmap")


@click.command(context_settings={"help_option_names": ["-h", "--help"],
                                 "ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def finetune(args):
    """NOT IMPLEMENTED YET: downstream fine-tuning (segmentation, classification).

    This version only pretrains (`ssl3d pretrain`) and exports (`ssl3d export`)
    encoders. The command exists so scripts fail loudly: it prints a message
    and exits with status 1, whatever the arguments.
    """
    click.echo(f"Error: {NOT_IMPLEMENTED}", err=True)
    sys.exit(1)
