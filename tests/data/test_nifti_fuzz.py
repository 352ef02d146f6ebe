"""Hostile and broken NIfTI files: every one loads correctly or is one clear `DataError`.

The committed corpus (tests/data/fuzz_corpus/, written by tools/make_fuzz_corpus.py) and
mutations of nibabel's own larger test files are fed to the readers in a child process
with an address-space limit (tests/data/nifti_fuzz_worker.py): no traceback, no hang, no
crash, no library noise, no memory beyond a small bound. `prepare_dataset(..., on_error=
"skip")` over the corpus reports each bad file as skipped and carries on. The hypothesis
fuzzer (slow) mutates random header fields and bytes for longer runs.
"""

import collections
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ssl3d_keras.data import prepare as prepare_module
from ssl3d_keras.data.manifest import Manifest
from ssl3d_keras.data.prepare import prepare_dataset
from ssl3d_keras.errors import DataError
from tests.data.nifti_fuzz_worker import FAILURES, READERS, run_corpus

CORPUS = Path(__file__).parent / "fuzz_corpus"
TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_fuzz_corpus.py"
REAL_LARGER = ("anatomical.nii", "functional.nii", "reoriented_anat_moved.nii",
               "example_nifti2.nii.gz")
MAX_SECONDS = 5.0  # per file, all three readers
MAX_RSS_MB = 400   # the child's peak over the whole run (numpy + nibabel alone are ~60)


def _tool():
    spec = importlib.util.spec_from_file_location("make_fuzz_corpus", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kind(path):
    parts = Path(path).name.split("__")
    return parts[1] if len(parts) > 2 else parts[-1].split(".")[0]


def _check(results):
    failures = [(Path(r["path"]).name, {k: r[k] for k in READERS}, r["detail"])
                for r in results if any(r[k] in FAILURES for k in READERS)]
    assert not failures, failures[:5]
    slow = [(Path(r["path"]).name, r["seconds"]) for r in results if r["seconds"] > MAX_SECONDS]
    assert not slow, slow
    assert max(r["maxrss_mb"] for r in results) < MAX_RSS_MB


def _outcomes(results):
    counts = collections.Counter()
    for r in results:
        counts[(_kind(r["path"]), r["load_nifti"])] += 1
    return counts


def test_corpus_is_what_the_tool_writes(tmp_path):
    count = _tool().write_corpus(tmp_path / "corpus")
    assert count == len(list(CORPUS.iterdir()))
    for path in sorted((tmp_path / "corpus").iterdir()):
        assert (CORPUS / path.name).read_bytes() == path.read_bytes(), path.name
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 600_000


def test_every_corpus_file_loads_or_is_one_clear_error():
    paths = sorted(CORPUS.iterdir())
    results = run_corpus(paths, address_space_gb=2.0, timeout=30)
    _check(results)
    outcomes = _outcomes(results)
    # Every class both loads (harmless mutations) and is refused: the corpus tests something.
    for kind in ("field", "bitflip"):
        assert outcomes[(kind, "loaded")] > 0 and outcomes[(kind, "error")] > 0, (kind, outcomes)
    # A file cut short, a bad CRC, NaN/Inf voxels or not NIfTI at all never loads.
    for kind in ("trunc", "voxels"):
        assert outcomes[(kind, "error")] > 0 and outcomes[(kind, "loaded")] == 0, (kind, outcomes)
    by_name = {Path(r["path"]).name: r for r in results}
    for name in ("synth_i16__field__sform_nan.nii", "synth_i16__field__sform_zero.nii.gz",
                 "synth_i16__field__sform_rank2.nii", "synth_i16__field__qform_nan_quaternion.nii",
                 "synth_i16__field__pixdim_nan_no_codes.nii",
                 "synth2_f32__field__dim_huge.nii", "synth_u8__trunc__isize_spoof_4gib.nii.gz",
                 "synth_u8__trunc__gzip_bomb_16mib.nii.gz", "synth_i16__trunc__gz_bad_crc.nii.gz"):
        assert all(by_name[name][k] == "error" for k in READERS[:2]), by_name[name]
    # A pixdim that disagrees with a valid sform loads, with the sform's voxel size.
    assert by_name["synth_i16__field__pixdim_doubled.nii"]["load_nifti"] == "loaded"


def test_mutated_real_files_load_or_are_one_clear_error(tmp_path, nibabel_data):
    tool = _tool()
    paths = []
    for index, name in enumerate(REAL_LARGER):
        blob = Path(nibabel_data, name).read_bytes()
        suffix = ".nii.gz" if name.endswith(".gz") else ".nii"
        stem = name[: -len(suffix)]
        (tmp_path / name).write_bytes(blob)
        paths.append(tmp_path / name)
        for kind, tag, data in tool.mutations(name, blob, seed=100 + index):
            if kind == "trunc" and suffix == ".nii.gz" and tag.startswith("raw_cut"):
                continue  # the committed corpus covers these; recompressing 1 MB each is slow
            path = tmp_path / f"{stem}__{kind}__{tag}{suffix}"
            path.write_bytes(data)
            paths.append(path)
    results = run_corpus(paths, address_space_gb=2.0, timeout=30)
    _check(results)
    assert len(results) > 250
    originals = [r for r in results if "__" not in Path(r["path"]).name]
    assert all(r[k] == "loaded" for r in originals for k in ("load_nifti", "read_header_shape"))


def test_prepare_skips_each_bad_file_and_carries_on(tmp_path):
    data = tmp_path / "raw"
    # The 3D single-channel files of the corpus (4D files would be channel-count errors);
    # x.nii and x.nii.gz would share a case id, hence one folder each.
    names = [p.name for p in sorted(CORPUS.iterdir()) if p.name.startswith("synth_i16")
             and (p.name.endswith(".nii") or "__trunc__" in p.name or "__field__s" in p.name)]
    for name in names:
        folder = data / ("gz" if name.endswith(".gz") else "plain")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes((CORPUS / name).read_bytes())
    manifest = prepare_dataset(data, tmp_path / "out", on_error="skip", progress=False)
    assert len(manifest["cases"]) + len(manifest["skipped"]) == len(names)
    assert len(manifest["cases"]) > 20 and len(manifest["skipped"]) > 40
    for entry in manifest["skipped"]:
        assert "\n" not in entry["reason"] and entry["id"] in entry["reason"] or (
            entry["sources"][0] in entry["reason"]), entry
    skipped = {e["id"] for e in manifest["skipped"]}
    assert {"plain/synth_i16__field__sform_nan", "gz/synth_i16__field__sform_zero",
            "plain/synth_i16__field__qform_nan_quaternion"} <= skipped
    text = (tmp_path / "out" / "manifest.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"manifest holds {c}"))
    for case in manifest["cases"]:
        assert all(np.isfinite(case["spacing"])) and min(case["spacing"]) > 0


def test_failed_manifest_write_leaves_no_orphan_shards(tmp_path, monkeypatch, rng):
    from tests.data.helpers_nifti import write_nifti

    for i in range(3):
        write_nifti(tmp_path / "raw" / f"case_{i}.nii.gz", rng.normal(size=(6, 6, 6)),
                    dtype=np.float32)
    out = tmp_path / "out"

    def refuse(self, folder):
        raise ValueError("Out of range float values are not JSON compliant")

    monkeypatch.setattr(Manifest, "write", refuse)
    with pytest.raises(ValueError):
        prepare_dataset(tmp_path / "raw", out, progress=False, examples_per_shard=1)
    assert not any(p.name.startswith("shard-") for p in out.iterdir())
    monkeypatch.undo()
    manifest = prepare_dataset(tmp_path / "raw", out, progress=False, examples_per_shard=1)
    assert len(manifest["cases"]) == 3 and Manifest.exists(out)


def test_non_finite_case_record_is_a_skipped_case(tmp_path, monkeypatch, rng):
    from tests.data.helpers_nifti import write_nifti

    for i in range(2):
        write_nifti(tmp_path / "raw" / f"case_{i}.nii", rng.normal(size=(6, 6, 6)),
                    dtype=np.float32)
    real = prepare_module.preprocess_case

    def poisoned(image, label, spacing, config, **kwargs):
        image, label, info = real(image, label, spacing, config, **kwargs)
        if kwargs["case_id"] == "case_1":
            info["normalization"][0]["std"] = float("nan")
        return image, label, info

    monkeypatch.setattr(prepare_module, "preprocess_case", poisoned)
    manifest = prepare_dataset(tmp_path / "raw", tmp_path / "out", on_error="skip",
                               progress=False)
    assert [c["id"] for c in manifest["cases"]] == ["case_0"]
    assert manifest["skipped"][0]["id"] == "case_1"
    assert "non-finite" in manifest["skipped"][0]["reason"]
    with pytest.raises(DataError, match="non-finite"):
        prepare_dataset(tmp_path / "raw", tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


@pytest.mark.slow
def test_hypothesis_header_and_byte_fuzzer(tmp_path_factory, nibabel_data):
    """Random header fields at random values and random byte runs, for a long run."""
    from hypothesis import HealthCheck, given, settings  # the `test` extra
    from hypothesis import strategies as st

    from tests.data.nifti_fuzz_worker import classify

    tool = _tool()
    bases = {**tool.synthetic_bases(), **tool.real_small_bases()}
    for name in ("anatomical.nii", "example_nifti2.nii.gz"):
        bases[name] = Path(nibabel_data, name).read_bytes()
    folder = tmp_path_factory.mktemp("hypothesis")
    numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                        st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 1, 2**31]))

    @settings(max_examples=int(os.environ.get("NIFTI_FUZZ_EXAMPLES", "1500")), deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(base=st.sampled_from(sorted(bases)), edits=st.lists(
        st.tuples(st.integers(0, 10**6), numbers), min_size=1, max_size=4),
        flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), max_size=3))
    def fuzz(base, edits, flips):
        blob = bases[base]
        raw = tool._raw(base, blob)
        dtype = tool._header_dtype(raw)
        header = np.frombuffer(raw[: dtype.itemsize], dtype=dtype).copy()
        for which, value in edits:
            field = dtype.names[which % len(dtype.names)]
            cell = header[field][0] if header[field].ndim > 1 else header[field]
            try:
                if np.ndim(cell) and not isinstance(cell, bytes):
                    cell[which % len(cell)] = value
                else:
                    header[field] = value
            except (ValueError, OverflowError, TypeError):
                continue
        data = bytearray(header.tobytes() + raw[dtype.itemsize:])
        for at, byte in flips:
            data[at % len(data)] = byte
        path = folder / f"case{'.nii.gz' if base.endswith('.gz') else '.nii'}"
        path.write_bytes(tool._pack(base, bytes(data)))
        result = classify(path)
        bad = {k: result[k] for k in READERS if result[k] in FAILURES}
        assert not bad, (bad, result["detail"])
        assert result["seconds"] < MAX_SECONDS

    fuzz()


@pytest.mark.slow
def test_large_gzip_bomb_is_refused_in_a_second_with_flat_memory(tmp_path):
    """An 8 GiB stream of zeros (8 MB compressed) behind a 4 x 4 x 4 header."""
    bomb = _tool().gzip_bomb(tmp_path / "bomb.nii.gz", 8 << 30)
    results = run_corpus([bomb], address_space_gb=1.0, timeout=10)
    assert results[0]["load_nifti"] == "error" and results[0]["seconds"] < 1.0
    assert "holds more than" in results[0]["detail"]["load_nifti"]
    assert results[0]["maxrss_mb"] < 150
