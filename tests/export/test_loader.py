"""`load_encoder` for every handle kind; strict weights; checksums; channel adaptation."""

import hashlib
import http.server
import json
import threading

import keras
import numpy as np
import pytest

from ssl3d_keras.errors import ExportError
from ssl3d_keras.export import SavedModelLayer, export_encoder, load_encoder
from ssl3d_keras.export.preset import load_weights_strict
from ssl3d_keras.models import UNetEncoder


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    keras.utils.set_random_seed(3)
    encoder = UNetEncoder(input_channels=2, depth=1, base_filters=2)
    out = tmp_path_factory.mktemp("exp")
    export_encoder(encoder, out, data={"modality": "MRI", "channel_names": ["T1", "FLAIR"]})
    return encoder, out


def test_every_local_handle_gives_the_same_encoder(export_dir, tmp_path, rng):
    encoder, out = export_dir
    x = rng.normal(size=(2, 8, 8, 8, 2)).astype(np.float32)
    expected = encoder(x, training=False)
    for handle in (out, out / "preset", str(out / "savedmodel"), out / "hub.tar.gz"):
        model = load_encoder(handle, cache=tmp_path / "cache")
        assert isinstance(model, keras.Model)
        np.testing.assert_allclose(model(x, training=False), expected, atol=1e-5)
        assert model.ssl3d_metadata["input"]["channel_names"] == ["T1", "FLAIR"]
    assert isinstance(load_encoder(out), UNetEncoder)  # the preset wins: original class
    wrapped = load_encoder(out / "savedmodel", trainable=False)
    assert any(isinstance(layer, SavedModelLayer) for layer in wrapped.layers)
    assert wrapped.trainable_weights == []


def test_url_handle_with_sha256(export_dir, tmp_path, rng):
    encoder, out = export_dir
    data = (out / "hub.tar.gz").read_bytes()
    digest = hashlib.sha256(data).hexdigest()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/enc.tar.gz"
    try:
        model = load_encoder(f"{url}#sha256={digest}", cache=tmp_path)
        x = rng.normal(size=(1, 8, 8, 8, 2)).astype(np.float32)
        np.testing.assert_allclose(model(x), encoder(x, training=False), atol=1e-5)
        with pytest.raises(ExportError, match="sha256 mismatch"):
            load_encoder(url, sha256="f" * 64, cache=tmp_path)
        with pytest.raises(ExportError, match="needs its sha256"):
            load_encoder(url, cache=tmp_path)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_strict_weights_and_tampered_files(export_dir, tmp_path):
    encoder, out = export_dir
    other = UNetEncoder(input_channels=2, depth=2, base_filters=2)
    with pytest.raises(ExportError, match="missing weights") as err:
        load_weights_strict(other, out / "preset" / "model.weights.h5")
    assert "conv" in str(err.value) or "vars" in str(err.value)
    wider = UNetEncoder(input_channels=2, depth=1, base_filters=4)
    with pytest.raises(ExportError, match="shape mismatches"):
        load_weights_strict(wider, out / "preset" / "model.weights.h5")
    smaller = UNetEncoder(input_channels=2, depth=1, base_filters=2, norm="none")
    with pytest.raises(ExportError, match="unexpected weights"):
        load_weights_strict(smaller, out / "preset" / "model.weights.h5")

    tampered = tmp_path / "preset"
    tampered.mkdir()
    for name in ("config.json", "model.weights.h5", "metadata.json"):
        (tampered / name).write_bytes((out / "preset" / name).read_bytes())
    meta = json.loads((tampered / "metadata.json").read_text())
    meta["files"]["model.weights.h5"] = "0" * 64
    (tampered / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match="sha256 differs from metadata.json"):
        load_encoder(tampered)


def test_input_channel_adaptation_reports_mapping(export_dir, rng):
    encoder, out = export_dir
    model = load_encoder(out, input_channels=4)
    assert model.inputs[0].shape[-1] == 4
    assert isinstance(model.channel_report, str) and "4" in model.channel_report
    # Mean mode: a 4-channel input of equal channels gives the same output as 2 equal channels
    # when the kernel of each new channel is the mean of the old ones, scaled to keep the sum.
    x = rng.normal(size=(1, 8, 8, 8, 1)).astype(np.float32)
    reference = encoder(np.repeat(x, 2, axis=-1), training=False)
    np.testing.assert_allclose(model(np.repeat(x, 4, axis=-1), training=False), reference,
                               atol=1e-4)
    with pytest.raises(ExportError, match="only be adapted for a preset"):
        load_encoder(out / "savedmodel", input_channels=4)


def test_unusable_handles(tmp_path):
    with pytest.raises(ExportError, match="neither a preset"):
        load_encoder(tmp_path)
    with pytest.raises(ExportError, match="not a folder, an archive"):
        load_encoder(tmp_path / "nothing-here")
    with pytest.raises(ExportError, match="unsupported handle scheme"):
        load_encoder("s3://bucket/encoder")
    # The export loader resolves paths and URLs only; zoo names go through the front door.
    with pytest.raises(ExportError, match=r"zoo name is loaded with ssl3d_keras.load_encoder"):
        load_encoder("phantom-rotation", cache=tmp_path)
