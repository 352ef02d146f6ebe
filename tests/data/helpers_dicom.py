"""Writers of tiny DICOM CT series in temp folders, and the test files pydicom ships."""

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DICOMDIR_TESTS = PYDICOM_FILES / "dicomdirtests"
AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))


def ds_number(value):
    """`value` as DICOM writes it (a decimal string of at most 16 characters), as a float."""
    return float(f"{float(value):.6f}")


def oblique_directions(a=0.3, b=-0.5, c=0.2):
    """Row and column direction cosines of a rotation by Euler angles (radians), rounded."""
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rz = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rx = np.array([[1, 0, 0], [0, cc, -sc], [0, sc, cc]])
    rot = rz @ ry @ rx
    return tuple(ds_number(v) for v in rot[:, 0]), tuple(ds_number(v) for v in rot[:, 1])


def write_slice(path, pixels, *, position, directions=AXIAL, pixel_spacing=(0.8, 0.6),
                slope=1.0, intercept=-1024.0, series_uid="1.2.3.4", patient_id="P01",
                description="CT abdomen", number=3):
    """One single-frame CT slice file; `pixels` int16 `(rows, columns)`. Returns the path."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.SeriesDescription = description
    ds.SeriesNumber = number
    ds.Modality = "CT"
    pixels = np.asarray(pixels, dtype="<i2")
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*directions[0], *directions[1])]
    ds.PixelSpacing = [f"{v:.6f}" for v in pixel_spacing]
    ds.RescaleSlope = f"{slope:.6f}"
    ds.RescaleIntercept = f"{intercept:.6f}"
    ds.PixelData = pixels.tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def write_series(folder, stored, *, origin=(-100.0, -120.0, 30.0), directions=AXIAL, step=2.5,
                 seed=0, **kwargs):
    """A series of `stored.shape[2]` slices (voxel `(i, j, k)` = column i, row j, slice k).

    Args:
        stored: int16 `(columns, rows, slices)` stored values (before rescale).
        origin: ImagePositionPatient of slice 0 (LPS, mm).
        directions: (row direction, column direction) cosines.
        step: distance between slices along the normal (mm).
        seed: files are named `IM0000`, ... in a shuffled order, so that the
            name order is not the slice order.
        **kwargs: for `write_slice` (pixel_spacing, slope, intercept, series_uid, ...).

    Returns:
        The file paths in slice order.
    """
    normal = np.cross(directions[0], directions[1])
    names = np.random.default_rng(seed).permutation(stored.shape[2])
    paths = []
    for k in range(stored.shape[2]):
        position = np.asarray(origin) + k * step * normal
        paths.append(write_slice(Path(folder) / f"IM{names[k]:04d}", stored[:, :, k].T,
                                 position=position, directions=directions, **kwargs))
    return paths
