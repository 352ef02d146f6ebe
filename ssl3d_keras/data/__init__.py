"""Data: NIfTI I/O, dataset layouts, preprocessing, shards, phantoms and tf.data pipelines."""
