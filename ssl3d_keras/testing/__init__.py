"""Contract suites a user runs on their own task or encoder, as the project's tests do.

- `ssl3d_keras.testing.tasks`: transform shapes, same seed same example,
  graph safety, forward pass and loss, gradients to every weight,
  serialisation, unknown keys, mixed precision; for every registered task.
- `ssl3d_keras.testing.encoders`: output shapes, pyramid outputs, divisibility,
  small-input errors, preset round trip; for every registered architecture.

The checks raise `AssertionError` naming what broke, so they run under pytest
or on their own. Import the submodule you need (they import TensorFlow).
"""
