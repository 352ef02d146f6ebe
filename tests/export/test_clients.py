"""Real clients, each in its own process: TF Hub + tf_keras, TFSMLayer, saved_model_cli,
our Keras 3 layer; and (slow) a clean venv without ssl3d_keras."""

import keras
import pytest

from ssl3d_keras.errors import ExportError
from ssl3d_keras.export import export_encoder, verify
from ssl3d_keras.models import UNetEncoder


@pytest.fixture(scope="module")
def export_with_probe(tmp_path_factory):
    keras.utils.set_random_seed(5)
    out = tmp_path_factory.mktemp("clients")
    encoder = UNetEncoder(input_channels=2, depth=2, base_filters=2, dropout=0.2)
    export_encoder(encoder, out, formats=["savedmodel"])
    probe = verify.write_probe(encoder, out / "probe.npz", batch=2)
    return out / "savedmodel", probe


@pytest.mark.subprocess
def test_every_client_round_trips_and_fine_tunes(export_with_probe):
    savedmodel, probe = export_with_probe
    results = verify.verify_export(savedmodel, probe)
    checks = {name: c for client in results.values() for name, c in client.items()}
    expected = [
        "hub.load __call__(training=False) == encoder",
        "hub.load skips['skip_2'] == encoder",
        "hub.KerasLayer (tf_keras) inference == encoder",
        "hub.KerasLayer fine-tune changes every trainable weight",
        "hub.KerasLayer fine-tune updates BatchNorm moving statistics",
        "keras.layers.TFSMLayer inference == encoder",
        "saved_model_cli show --all lists serving_default",
        "saved_model_cli run == encoder",
        "SavedModelLayer inference == encoder",
        "SavedModelLayer fine-tune (Adam) changes every trainable weight",
        "SavedModelLayer fine-tune updates BatchNorm moving statistics",
    ]
    for name in expected:
        assert checks[name]["ok"], (name, checks[name])
    assert checks["saved_model_cli run == encoder"]["value"] <= 1e-5


@pytest.mark.subprocess
def test_hub_keras_layer_adds_regularization_losses(tmp_path):
    inputs = keras.Input((None, None, None, 1))
    x = keras.layers.Conv3D(2, 3, padding="same",
                            kernel_regularizer=keras.regularizers.L2(0.01))(inputs)
    encoder = keras.Model(inputs, keras.layers.BatchNormalization()(x))
    export_encoder(encoder, tmp_path, formats=["savedmodel"])
    probe = verify.write_probe(encoder, tmp_path / "probe.npz")
    checks = verify.verify_export(tmp_path / "savedmodel", probe,
                                  clients=["hub_tf_keras"])["hub_tf_keras"]
    assert checks["hub.KerasLayer adds the regularisation losses"]["value"] == [1, 1]


@pytest.mark.subprocess
def test_a_failing_client_is_reported(export_with_probe, tmp_path):
    _, probe = export_with_probe
    (tmp_path / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(ExportError, match="client check"):
        verify.verify_export(tmp_path, probe, clients=["keras3_tfsm"])


@pytest.mark.slow
@pytest.mark.subprocess
def test_clean_venv_loads_the_export(export_with_probe, tmp_path):
    savedmodel, probe = export_with_probe
    python = verify.make_clean_venv(tmp_path / "venv")
    results = verify.verify_export(savedmodel, probe, clients=verify.STANDALONE_CLIENTS,
                                   python=str(python))
    assert results["hub_tf_keras"]["hub.KerasLayer fine-tune changes every trainable weight"]["ok"]
