"""Stand-alone client scripts that check an export from outside ssl3d_keras.

Each script is run as `python SCRIPT SAVEDMODEL_DIR PROBE_NPZ` in its own
process, imports only TensorFlow-side packages (the hub and TF Serving ones
must work in a venv without ssl3d_keras), and prints one JSON line
`{"client": ..., "checks": {name: {"ok": bool, "value": ...}}}`.
`ssl3d_keras.export.verify` runs them and reads the verdicts.
"""
