"""How fast a fine-tuned model segments whole volumes: sliding-window throughput.

`ssl3d benchmark speed` reports it beside the pretraining figures. The model is the
encoder plus the paper's U-Net decoder (`build_segmentation_model`), called as the
exported model's `serving_default` runs it (inference mode, softmax out), over a whole
volume in overlapping windows with Gaussian blending (`sliding_window_predict`).

Example:

>>> sliding_window_throughput(size=32, window=16, encoder={"depth": 2, "base_filters": 4},
...                           repeats=1)["volumes_per_sec"] > 0
True
"""

import statistics
import time

import numpy as np


def sliding_window_throughput(*, size=128, window=64, overlap=0.5, batch_size=2, classes=4,
                              channels=1, encoder=None, repeats=2):
    """Whole volumes per second of encoder + U-Net decoder, by overlapping windows.

    Args:
        size: edge of the (cubic) volume.
        window: edge of the windows the model sees.
        overlap: fraction of a window shared with its neighbour.
        batch_size: windows per model call.
        classes: output classes (softmax).
        channels: input channels.
        encoder: `UNetEncoder` arguments; None = the paper encoder.
        repeats: timed volumes, after one untimed (tracing) volume.

    Returns:
        dict with the settings, `windows` per volume, `median_volume_sec`,
        `volumes_per_sec` and `windows_per_sec`.
    """
    import tensorflow as tf

    from ssl3d_keras.downstream.inference import sliding_window_predict, window_starts
    from ssl3d_keras.downstream.models import build_segmentation_model
    from ssl3d_keras.models.factory import get_encoder

    backbone = get_encoder({"architecture": "unet", **(encoder or {})},
                           input_channels=channels, dim=3)
    model = build_segmentation_model(backbone.skips_model(), classes, dim=3,
                                     input_channels=channels)
    forward = tf.function(lambda x: model(x, training=False))
    volume = np.random.default_rng(0).normal(size=(size,) * 3 + (channels,)).astype("float32")

    def one_volume():
        started = time.perf_counter()
        sliding_window_predict(volume, lambda batch: forward(batch).numpy(), window=window,
                               overlap=overlap, batch_size=batch_size,
                               divisible_by=backbone.divisible_by)
        return time.perf_counter() - started

    one_volume()
    median = statistics.median(one_volume() for _ in range(repeats))
    windows = len(window_starts(size, window, overlap)) ** 3
    return {"size": size, "window": window, "overlap": overlap, "batch_size": batch_size,
            "classes": classes, "windows": windows, "median_volume_sec": median,
            "volumes_per_sec": 1.0 / median, "windows_per_sec": windows / median}
