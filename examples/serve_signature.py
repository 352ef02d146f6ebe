"""Call an export's `serving_default` signature, as TF Serving does.

    python examples/serve_signature.py --export exports/demo/export
    python examples/serve_signature.py --tiny        # makes a tiny export first

Needs only TensorFlow. The same SavedModel runs in TF Serving
(`tensorflow_model_server --model_base_path=...`, after copying savedmodel/ to
a numbered version folder) and in `saved_model_cli run`.
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", help="an `ssl3d export` folder (or its savedmodel/)")
    parser.add_argument("--tiny", action="store_true", help="make a tiny export first")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf
    from pretrain_and_export import savedmodel_for

    path = savedmodel_for(parser, args)

    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    spec = serve.structured_input_signature[1]["inputs"]
    meta_file = os.path.join(path, "assets.extra", "ssl3d_metadata.json")
    meta = json.load(open(meta_file)) if os.path.isfile(meta_file) else {}
    size = 2 * meta.get("input", {}).get("min_input_size", 8)
    shape = [2] + [s if s is not None else size for s in spec.shape[1:]]
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    features = serve(inputs=tf.constant(x))["features"]
    print(f"serving_default: inputs {shape} -> features {features.shape.as_list()}")
    direct = loaded(x, training=False)
    print(f"same as __call__(training=False): max |diff| = "
          f"{float(tf.reduce_max(tf.abs(features - direct))):.2e}")
    print(f"skips: {sorted(loaded.signatures['serving_skips'](inputs=tf.constant(x)))}")
    print(f"try: saved_model_cli show --dir {path} --all")


if __name__ == "__main__":
    main()
