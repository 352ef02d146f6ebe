"""Client: keras.layers.TFSMLayer (Keras 3) inference on the serving_default signature."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
from _common import Checks, read_args  # noqa: E402


def tfsm(c, path, probe, tol):
    x = probe["inputs"]
    inputs = keras.Input(x.shape[1:])
    outputs = keras.layers.TFSMLayer(path, call_endpoint="serving_default")(inputs)
    model = keras.Model(inputs, outputs)
    c.close("keras.layers.TFSMLayer inference == encoder", model(x)["features"],
            probe["features"], tol)


def main():
    path, probe, tol = read_args()
    c = Checks("keras3_tfsm")
    c.run("TFSMLayer", lambda c: tfsm(c, path, probe, tol))
    c.emit()


if __name__ == "__main__":
    main()
