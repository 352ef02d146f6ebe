"""Pretrain an encoder on synthetic phantoms and export it in every format.

    python examples/pretrain_and_export.py --out exports/demo          # a few minutes
    python examples/pretrain_and_export.py --out /tmp/demo --tiny      # seconds

Writes OUT/run/ (the pretraining run) and OUT/export/ with preset/,
savedmodel/ and hub.tar.gz, then loads the export back and checks that it
gives the trained encoder's outputs.
"""

import argparse
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pretrain_and_export(out, *, tiny=False, task="rotation"):
    """Pretrain `task` on phantoms into `out/run`, export to `out/export`; returns the export dir."""
    import numpy as np

    import ssl3d_keras
    from ssl3d_keras.config import from_dict
    from ssl3d_keras.export import export_run
    from ssl3d_keras.training import PretrainConfig, load_run, pretrain

    config = {"task": task, "steps": 100, "batch_size": 4, "precision": "float32",
              "jit_compile": False,
              "encoder": {"depth": 2, "base_filters": 4, "norm": "batch", "dropout": 0.0},
              "data": {"input_size": 32, "phantoms": {"n": 8, "size": 32}}}
    if tiny:
        config.update(steps=2, batch_size=2, checkpoint_every=1)
        config["encoder"] = {"depth": 1, "base_filters": 2, "norm": "batch", "dropout": 0.0}
        config["data"] = {"input_size": 16, "phantoms": {"n": 2, "size": 16}}
        config["task_config"] = {"head_units": [8]}
    summary = pretrain(from_dict(PretrainConfig, config), os.path.join(out, "run"),
                       verbose=not tiny)
    print(f"pretrained {task}: {summary['steps']} steps, final loss {summary['final_loss']:.3f}, "
          f"accuracy {summary['final_accuracy']:.3f} (chance {summary['chance_accuracy']:.3f})")
    written = export_run(os.path.join(out, "run"), os.path.join(out, "export"))
    for kind in ("preset", "savedmodel", "hub"):
        print(f"  {kind:<10} {written[kind]}")

    # The export gives the trained encoder's outputs.
    task_model, _ = load_run(os.path.join(out, "run"))
    encoder = ssl3d_keras.load_encoder(os.path.join(out, "export"))
    x = np.random.default_rng(0).normal(size=(1, 16, 16, 16, 1)).astype("float32")
    diff = np.max(np.abs(np.asarray(encoder(x)) - np.asarray(task_model.encoder(x))))
    print(f"reloaded preset matches the trained encoder: max |diff| = {diff:.2e}")
    assert diff < 1e-5
    return os.path.join(out, "export")


def tiny_export():
    """A tiny export in a temporary folder that is removed when Python exits."""
    out = tempfile.mkdtemp(prefix="ssl3d-example-")
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    return pretrain_and_export(out, tiny=True)


def savedmodel_for(parser, args):
    """The SavedModel folder a fine-tuning example uses: `--export` (or its savedmodel/),
    or with `--tiny` and no `--export`, a tiny export made on the spot."""
    export = args.export
    if export is None:
        if not args.tiny:
            parser.error("give --export DIR, or --tiny to make a tiny export first")
        export = tiny_export()
    nested = os.path.join(export, "savedmodel")
    return nested if os.path.isdir(nested) else export


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (run/ and export/)")
    parser.add_argument("--task", default="rotation", help="proxy task (default: rotation)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    args = parser.parse_args(argv)
    pretrain_and_export(args.out, tiny=args.tiny, task=args.task)


if __name__ == "__main__":
    main()
