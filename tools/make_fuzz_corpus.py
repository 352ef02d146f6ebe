"""Write the NIfTI fuzz corpus of tests/data/fuzz_corpus/ (broken and hostile headers and files).

Every case is a small file made from a well-formed base by one mutation, in classes:

- `field`: one header field set to an extreme (dims negative, zero, huge or 8-D; pixdim
  zero, NaN, negative; scl_slope NaN or 1e38; vox_offset past the end or negative; unknown
  datatype codes; singular or NaN qform/sform; bad extension sizes; NIfTI-2 dims whose
  product overflows int64);
- `voxels`: NaN/Inf voxels;
- `trunc`: the file cut short (plain and gzipped), a corrupt gzip CRC or ISIZE, a gzip
  whose ISIZE agrees (mod 2**32) with a header declaring 4 GiB more than the stream holds,
  and a small gzip bomb;
- `bitflip`: seeded single-bit flips in the header and anywhere in the file;
- `foreign`: not NIfTI at all (empty, text, another format under a .nii name).

The bases are tiny synthetic volumes (NIfTI-1 and -2, plain and gzipped) and nibabel's
own small test files. `mutations(name, blob)` is reused by the tests to mutate nibabel's
larger test files on the fly, so the committed corpus stays small (well under 1 MB).

    python tools/make_fuzz_corpus.py                 # rewrite tests/data/fuzz_corpus/
    python tools/make_fuzz_corpus.py --out /tmp/corpus
"""

import argparse
import gzip
import os
import shutil
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "fuzz_corpus"
NAN, INF = float("nan"), float("inf")
# nibabel's smallest real files, committed mutated; the larger ones are mutated by the test.
REAL_SMALL = ("standard.nii.gz",)


def _is_gz(name):
    return name.endswith(".gz")


def _raw(name, blob):
    return gzip.decompress(blob) if _is_gz(name) else blob


def _pack(name, raw):
    # mtime=0: the same input gives the same bytes, so the corpus regenerates identically.
    return gzip.compress(raw, compresslevel=6, mtime=0) if _is_gz(name) else raw


def _header_dtype(raw):
    """The structured dtype of the header at the start of `raw` (NIfTI-1/2, either byte order)."""
    for dtype, size in ((nib.nifti1.header_dtype, 348), (nib.nifti2.header_dtype, 540)):
        for order in "<>":
            if int.from_bytes(raw[:4], "little" if order == "<" else "big") == size:
                return dtype.newbyteorder(order)
    raise ValueError("not a NIfTI-1/2 header")


def _byteorder(dtype):
    """`"<"` or `">"`: a structured dtype's own `byteorder` is `"|"`, its fields' are not."""
    return "<" if dtype.fields["sizeof_hdr"][0].str[0] in "<=" else ">"


def _with_header(name, blob, edit):
    """`blob` with the header fields changed by `edit(header)` (a structured numpy record)."""
    raw = _raw(name, blob)
    dtype = _header_dtype(raw)
    header = np.frombuffer(raw[: dtype.itemsize], dtype=dtype).copy()
    try:
        edit(header)
    except (ValueError, OverflowError):  # e.g. NaN into NIfTI-2's integer vox_offset
        return None
    return _pack(name, header.tobytes() + raw[dtype.itemsize:])


def _set(**fields):
    def edit(header):
        for key, value in fields.items():
            key, _, index = key.partition("__")
            if index:
                header[key][0][int(index)] = value
            else:
                header[key] = value
    return edit


def _is_nifti2(raw):
    return _header_dtype(raw).itemsize == 540


def field_cases(name, blob):
    """(tag, bytes) of one header field at an extreme value each."""
    raw = _raw(name, blob)
    big = 2**40 if _is_nifti2(raw) else 32767
    cases = {
        "dim1_negative": _set(dim__1=-4),
        "dim2_zero": _set(dim__2=0),
        "dim_huge": _set(dim__1=big, dim__2=big, dim__3=big),
        "dim0_eight": _set(dim__0=8, dim__4=1, dim__5=1, dim__6=1, dim__7=1),
        "dim0_zero": _set(dim__0=0),
        "dim0_nine": _set(dim__0=9),
        "dim0_negative": _set(dim__0=-3),
        "dim0_two": _set(dim__0=2),
        "dim4_negative": _set(dim__0=4, dim__4=-2),
        "pixdim1_zero": _set(pixdim__1=0.0),
        "pixdim1_nan": _set(pixdim__1=NAN),
        "pixdim2_negative": _set(pixdim__2=-2.0),
        "pixdim3_inf": _set(pixdim__3=INF),
        "pixdim1_huge": _set(pixdim__1=1e5),
        "pixdim_doubled": _set(pixdim__1=2.0, pixdim__2=2.0, pixdim__3=2.0),
        "pixdim_nan_no_codes": _set(pixdim__1=NAN, qform_code=0, sform_code=0),
        "pixdim_zero_no_codes": _set(pixdim__2=0.0, qform_code=0, sform_code=0),
        "qfac_nan": _set(pixdim__0=NAN, sform_code=0, qform_code=1),
        "slope_nan": _set(scl_slope=NAN),
        "slope_huge": _set(scl_slope=1e38),
        "slope_inf": _set(scl_slope=INF),
        "inter_nan": _set(scl_inter=NAN),
        "inter_huge": _set(scl_inter=1e38, scl_slope=1.0),
        "vox_offset_past_end": _set(vox_offset=1e6),
        "vox_offset_negative": _set(vox_offset=-352.0),
        "vox_offset_nan": _set(vox_offset=NAN),
        "vox_offset_huge": _set(vox_offset=1e30),
        "vox_offset_zero": _set(vox_offset=0.0),
        "vox_offset_odd": _set(vox_offset=353.0),
        "datatype_zero": _set(datatype=0),
        "datatype_unknown": _set(datatype=9999),
        "datatype_binary": _set(datatype=1, bitpix=1),
        "datatype_complex": _set(datatype=32, bitpix=64),
        "datatype_rgb": _set(datatype=128, bitpix=24),
        "datatype_float128": _set(datatype=1536, bitpix=128),
        "datatype_float64": _set(datatype=64, bitpix=64),
        "bitpix_wrong": _set(bitpix=7),
        "sform_zero": _set(sform_code=1, srow_x=[0, 0, 0, 0], srow_y=[0, 0, 0, 0],
                           srow_z=[0, 0, 0, 0]),
        "sform_nan": _set(sform_code=1, srow_x__1=NAN),
        "sform_inf": _set(sform_code=1, srow_z__2=INF),
        "sform_rank2": _set(sform_code=1, srow_x=[1, 1, 0, 0], srow_y=[1, 1, 0, 0],
                            srow_z=[0, 0, 1, 0]),
        "sform_translation_nan": _set(sform_code=1, srow_y__3=NAN),
        "sform_huge": _set(sform_code=1, srow_x=[1e30, 0, 0, 0], srow_y=[0, 1e30, 0, 0],
                           srow_z=[0, 0, 1e30, 0]),
        "sform_tiny": _set(sform_code=1, srow_x=[1e-30, 0, 0, 0], srow_y=[0, 1e-30, 0, 0],
                           srow_z=[0, 0, 1e-30, 0]),
        "sform_half_mm_vs_pixdim": _set(sform_code=1, srow_x=[0.5, 0, 0, 0],
                                        srow_y=[0, 0.5, 0, 0], srow_z=[0, 0, 0.5, 0],
                                        pixdim__1=1.0, pixdim__2=1.0, pixdim__3=1.0),
        "sform_code_unknown": _set(sform_code=99),
        "qform_nan_quaternion": _set(sform_code=0, qform_code=1, quatern_b=NAN),
        "qform_quaternion_too_long": _set(sform_code=0, qform_code=1, quatern_b=0.9,
                                          quatern_c=0.9, quatern_d=0.9),
        "qform_offset_inf": _set(sform_code=0, qform_code=1, qoffset_x=INF),
        "qform_zero_pixdim": _set(sform_code=0, qform_code=1, pixdim__3=0.0),
        "qform_code_negative": _set(sform_code=0, qform_code=-1),
        "both_codes_zero": _set(sform_code=0, qform_code=0),
        "magic_broken": _set(magic=b"x+9\0" if not _is_nifti2(raw) else b"x+9\0\r\n\032\n"),
        "magic_pair": _set(magic=b"ni1\0" if not _is_nifti2(raw) else b"ni2\0\r\n\032\n"),
        "sizeof_hdr_wrong": _set(sizeof_hdr=1234),
        "intent_nan": _set(intent_p1=NAN, intent_code=1002),
    }
    out = [(tag, _with_header(name, blob, edit)) for tag, edit in cases.items()]
    out = [(tag, data) for tag, data in out if data is not None]
    out += _extension_cases(name, blob)
    return out


def _extension_cases(name, blob):
    """An extension flag with hostile extension sizes (esize huge, negative, odd)."""
    raw = _raw(name, blob)
    dtype = _header_dtype(raw)
    order = "little" if _byteorder(dtype) == "<" else "big"
    header = np.frombuffer(raw[: dtype.itemsize], dtype=dtype).copy()
    offset = int(header["vox_offset"][0])
    body = raw[offset:]
    out = []
    for tag, esize in (("ext_huge", 2**31 - 16), ("ext_negative", -16), ("ext_odd", 13),
                       ("ext_zero", 0)):
        header["vox_offset"] = dtype.itemsize + 4 + 16
        ext = (esize.to_bytes(4, order, signed=True) + (6).to_bytes(4, order) + b"\0" * 8)
        out.append((tag, _pack(name, header.tobytes() + b"\1\0\0\0" + ext + body)))
    return out


def voxel_cases(name, blob):
    """NaN and Inf voxels (float bases only)."""
    raw = _raw(name, blob)
    dtype = _header_dtype(raw)
    header = np.frombuffer(raw[: dtype.itemsize], dtype=dtype)[0]
    code = int(header["datatype"])
    if code not in (16, 64):
        return []
    vdtype = np.dtype("f4" if code == 16 else "f8").newbyteorder(_byteorder(dtype))
    offset = int(header["vox_offset"])
    out = []
    for tag, value in (("nan", NAN), ("inf", INF), ("neg_inf", -INF)):
        data = bytearray(raw)
        at = offset + vdtype.itemsize * 3
        data[at: at + vdtype.itemsize] = np.array([value], vdtype).tobytes()
        out.append((tag, _pack(name, bytes(data))))
    return out


def truncation_cases(name, blob):
    """The file cut short; for gzip also a corrupt CRC, a wrong ISIZE and a missing trailer."""
    out = []
    raw = _raw(name, blob)
    for cut in (0, 4, 100, 347, 348, 352, (352 + len(raw)) // 2, len(raw) - 1):
        if cut < len(raw):
            out.append((f"raw_cut_{cut}", _pack(name, raw[:cut])))
    if _is_gz(name):
        for cut in (10, len(blob) // 2, len(blob) - 4, len(blob) - 1):
            out.append((f"gz_cut_{cut}", blob[:cut]))
        crc = bytearray(blob)
        crc[-8] ^= 0xFF
        out.append(("gz_bad_crc", bytes(crc)))
        isize = bytearray(blob)
        isize[-4] ^= 0x01
        out.append(("gz_bad_isize", bytes(isize)))
        out.append(("gz_trailing_garbage", blob + b"garbage!"))
        out.append(("gz_two_members", blob + blob))
    return out


def bitflip_cases(name, blob, *, seed, header_flips=16, anywhere_flips=8):
    """Seeded single-bit flips: `header_flips` in the header, `anywhere_flips` anywhere."""
    rng = np.random.default_rng(seed)
    raw = _raw(name, blob)
    out = []
    for i in range(header_flips):
        data = bytearray(raw)
        at = int(rng.integers(0, min(352, len(raw))))
        data[at] ^= 1 << int(rng.integers(0, 8))
        out.append((f"header_{i:02d}_byte{at}", _pack(name, bytes(data))))
    for i in range(anywhere_flips):
        data = bytearray(blob)
        at = int(rng.integers(0, len(blob)))
        data[at] ^= 1 << int(rng.integers(0, 8))
        out.append((f"file_{i:02d}_byte{at}", bytes(data)))
    return out


def mutations(name, blob, *, seed=0):
    """Every `(class, tag, bytes)` mutation of one base file called `name` (`.nii` or `.nii.gz`)."""
    out = [("field", t, b) for t, b in field_cases(name, blob)]
    out += [("voxels", t, b) for t, b in voxel_cases(name, blob)]
    out += [("trunc", t, b) for t, b in truncation_cases(name, blob)]
    out += [("bitflip", t, b) for t, b in bitflip_cases(name, blob, seed=seed)]
    return out


def isize_spoof(expected_extra=2**32):
    """A gzip whose ISIZE equals, mod 2**32, the size its header declares, but which holds
    `expected_extra` bytes fewer: the header declares 2048 x 2048 x 1025 uint8 (4 GiB + 4 MiB)
    and the stream holds the header and 4 MiB of zeros (a few KB compressed)."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((2048, 2048, 1025))
    header.set_sform(np.eye(4), code=1)
    _single_file(header)
    raw = header.binaryblock + b"\0" * 4
    declared = int(header["vox_offset"]) + 2048 * 2048 * 1025
    raw += bytes(declared - expected_extra - len(raw))
    return gzip.compress(raw, compresslevel=9, mtime=0)


def gzip_bomb(path, stream_bytes, *, shape=(4, 4, 4)):
    """Write a `.nii.gz` declaring a tiny `shape` of uint8 whose stream goes on for `stream_bytes`."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape(shape)
    header.set_sform(np.eye(4), code=1)
    _single_file(header)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    with open(path, "wb") as f:
        f.write(compressor.compress(header.binaryblock + b"\0" * 4))
        left = stream_bytes
        while left > 0:
            f.write(compressor.compress(chunk[: min(left, len(chunk))]))
            left -= len(chunk)
        f.write(compressor.flush())
    return path


def _single_file(header):
    """A header as `nib.save` writes it into a `.nii`: voxels right after header + 4 bytes."""
    header["vox_offset"] = header.single_vox_offset


def synthetic_bases():
    """`{name: bytes}` of the tiny well-formed bases."""
    rng = np.random.default_rng(0)
    affine = np.array([[-1.0, 0, 0, 3], [0, 1.0, 0, -4], [0, 0, 1.0, 5], [0, 0, 0, 1]])
    bases = {}
    for name, cls, dtype in (("synth_i16.nii", nib.Nifti1Image, np.int16),
                             ("synth_i16.nii.gz", nib.Nifti1Image, np.int16),
                             ("synth_f32.nii", nib.Nifti1Image, np.float32),
                             ("synth2_f32.nii", nib.Nifti2Image, np.float32)):
        data = rng.integers(0, 100, size=(6, 7, 8)).astype(dtype)
        img = cls(data, affine)
        img.header.set_data_dtype(dtype)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        _single_file(img.header)
        img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
        raw = img.header.binaryblock + b"\0" * 4 + data.tobytes(order="F")
        bases[name] = _pack(name, raw)
    return bases


def real_small_bases():
    """`{name: bytes}` of nibabel's smallest test files."""
    folder = Path(nib.__file__).parent / "tests" / "data"
    return {name: (folder / name).read_bytes() for name in REAL_SMALL}


def foreign_cases():
    """(tag, suffix, bytes) of files that are not NIfTI at all."""
    folder = Path(nib.__file__).parent / "tests" / "data"
    return [("empty", ".nii", b""), ("empty", ".nii.gz", b""),
            ("text", ".nii", b"not an image\n" * 40),
            ("gzip_of_text", ".nii.gz", gzip.compress(b"not an image\n" * 40, mtime=0)),
            ("analyze_header", ".nii", (folder / "analyze.hdr").read_bytes()),
            ("nifti1_pair_header", ".nii", (folder / "nifti1.hdr").read_bytes()),
            ("minc1", ".nii", (folder / "tiny.mnc").read_bytes()),
            ("mgh", ".nii.gz", (folder / "test.mgz").read_bytes())]


def write_corpus(out):
    """Write every case to `out` (replaced); returns the number of files."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    count = 0
    bases = {**synthetic_bases(), **real_small_bases()}
    for index, (name, blob) in enumerate(sorted(bases.items())):
        stem, suffix = (name[:-7], ".nii.gz") if _is_gz(name) else (name[:-4], ".nii")
        (out / f"{stem}__base{suffix}").write_bytes(blob)
        count += 1
        for kind, tag, data in mutations(name, blob, seed=index):
            (out / f"{stem}__{kind}__{tag}{suffix}").write_bytes(data)
            count += 1
    for tag, suffix, data in foreign_cases():
        (out / f"foreign__{tag}{suffix}").write_bytes(data)
        count += 1
    (out / "synth_u8__trunc__isize_spoof_4gib.nii.gz").write_bytes(isize_spoof())
    gzip_bomb(out / "synth_u8__trunc__gzip_bomb_16mib.nii.gz", 16 << 20)
    return count + 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(CORPUS), help="folder to (re)write")
    args = parser.parse_args()
    count = write_corpus(args.out)
    size = sum(os.path.getsize(p) for p in Path(args.out).iterdir())
    print(f"wrote {count} files, {size / 1024:.0f} KiB, to {args.out}")


if __name__ == "__main__":
    main()
