"""Write synthetic multi-series CT studies as DICOM (pydicom) for tests, demos and benchmarks.

A :class:`SeriesPlan` describes one series (which phase it shows, its description, slice
thickness, timing, kernel, whether contrast tags are filled); :func:`write_study` renders
the plans from a :class:`hccatom.synthetic.SyntheticPatient` into one folder with shuffled
file names (no ``.dcm`` suffix), optionally nested, plus a non-DICOM file and a DICOMDIR-like
file, so that indexing meets what a real export looks like. No patient data: the patient
attributes are fixed synthetic values.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from hccatom.synthetic import SyntheticPatient
from hccatom.volume import Volume

__all__ = ["SYNTHETIC_PATIENT", "SeriesPlan", "default_plans", "write_study"]

SeriesKind = Literal["arterial", "portal", "noncontrast", "delayed", "localizer"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
INJECTION_TIME_S = 10 * 3600.0  # 10:00:00, an arbitrary synthetic clock time

SYNTHETIC_PATIENT = {
    "PatientName": "SYNTHETIC^PHANTOM",
    "PatientID": "SYN-0001",
    "PatientBirthDate": "19600101",
    "PatientSex": "O",
    "StudyDate": "20240101",
    "StudyTime": "095500",
    "AccessionNumber": "SYNACC1",
    "StudyID": "1",
    "ReferringPhysicianName": "",
}


@dataclass(frozen=True)
class SeriesPlan:
    """One series to write."""

    kind: SeriesKind
    description: str = ""
    thickness_factor: int = 1
    """Slices averaged into one (1: the phantom's own thickness)."""
    seconds_after_injection: float | None = None
    """Acquisition time relative to the injection; None: the kind's usual value."""
    contrast_tags: bool = True
    """Fill Contrast/Bolus Agent, Route and Start Time (contrast series only)."""
    kernel: str = "B30f"
    series_number: int | None = None
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL")
    flip_x: bool = False
    """Store columns running towards the patient's right (Image Orientation -1, 0, 0, ...)."""


_USUAL_DELAY_S = {"noncontrast": -120.0, "arterial": 35.0, "portal": 70.0,
                  "delayed": 180.0, "localizer": -300.0}


def default_plans(descriptions: bool = True) -> list[SeriesPlan]:
    """Localiser, non-contrast, arterial (thin + thick), portal (thin + thick), delayed."""
    d = descriptions
    return [
        SeriesPlan("localizer", "Topogram" if d else "", image_type=(
            "ORIGINAL", "PRIMARY", "LOCALIZER")),
        SeriesPlan("noncontrast", "Abdomen nativ 5.0" if d else "", thickness_factor=4),
        SeriesPlan("arterial", "Arterial 1.25 B30f" if d else ""),
        SeriesPlan("arterial", "Arterial 5.0 B30f" if d else "", thickness_factor=4),
        SeriesPlan("portal", "PV 1.25 B30f" if d else ""),
        SeriesPlan("portal", "PV 5.0 B30f" if d else "", thickness_factor=4),
        SeriesPlan("delayed", "Delayed 5.0" if d else "", thickness_factor=4),
    ]


def _source_volume(patient: SyntheticPatient, kind: SeriesKind) -> Volume:
    if kind == "arterial":
        return patient.arterial
    if kind in ("portal", "localizer"):
        return patient.portal
    base = np.asarray(patient.portal.array)
    if kind == "noncontrast":  # contrast washed out: pull enhanced tissue towards water
        arr = np.where(base > 40.0, 40.0 + (base - 40.0) * 0.35, base)
    else:  # delayed: between portal and non-contrast
        arr = np.where(base > 40.0, 40.0 + (base - 40.0) * 0.7, base)
    return patient.portal.with_array(arr.astype(np.float32))


def _thicken(volume: Volume, factor: int) -> Volume:
    if factor <= 1:
        return volume
    arr = np.asarray(volume.array)
    n = arr.shape[0] // factor
    thick = arr[: n * factor].reshape(n, factor, *arr.shape[1:]).mean(axis=1)
    sz = volume.spacing[0]
    origin = (volume.origin[0] + (factor - 1) / 2.0 * sz, volume.origin[1], volume.origin[2])
    return volume.with_array(thick.astype(np.float32), spacing=(
        sz * factor, volume.spacing[1], volume.spacing[2]), origin=origin)


def _tm(seconds: float) -> str:
    seconds = seconds % 86400.0
    hh, rem = divmod(seconds, 3600.0)
    mm, ss = divmod(rem, 60.0)
    return f"{int(hh):02d}{int(mm):02d}{ss:09.6f}"


def _base(study_uid: str, for_uid: str, charset: str, patient: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    for k, v in patient.items():
        setattr(ds, k, v)
    ds.StudyInstanceUID = study_uid
    ds.Modality = "CT"
    ds.Manufacturer = "hccatom synthetic"
    ds.ManufacturerModelName = "phantom"
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.KVP = "120"
    ds.BodyPartExamined = "ABDOMEN"
    return ds


def _file(ds: Dataset, path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def _pixels(ds: Dataset, hu: np.ndarray) -> None:
    stored = np.clip(np.rint(hu) + 1024.0, 0, 4095).astype(np.uint16)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.PixelData = stored.tobytes()


def write_study(
    patient: SyntheticPatient,
    out_dir: str | Path,
    plans: Sequence[SeriesPlan] | None = None,
    *,
    seed: int = 0,
    nested: bool = True,
    charset: str = "ISO_IR 192",
    patient_attributes: dict[str, str] | None = None,
    extras: bool = True,
) -> dict[str, str]:
    """Write ``plans`` (default :func:`default_plans`) as one DICOM study under ``out_dir``.

    Returns ``{series_label: SeriesInstanceUID}`` where the label is ``kind`` plus
    ``"_thick"`` for thickened series (and ``_2``, ``_3`` ... for repeats). File names are
    random hex strings without suffix, shuffled into up to three sub-folders when
    ``nested``. ``extras`` adds a README.txt (not DICOM) and a DICOMDIR-class file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plans = list(plans) if plans is not None else default_plans()
    rng = random.Random(seed)
    attrs = dict(SYNTHETIC_PATIENT if patient_attributes is None else patient_attributes)
    study_uid, for_uid = generate_uid(), generate_uid()
    uids: dict[str, str] = {}
    files: list[tuple[Dataset, str]] = []
    for number, plan in enumerate(plans, start=1):
        series_uid = generate_uid()
        label = plan.kind + ("_thick" if plan.thickness_factor > 1 else "")
        k = 2
        while label in uids:
            label = f"{plan.kind}{'_thick' if plan.thickness_factor > 1 else ''}_{k}"
            k += 1
        uids[label] = series_uid
        delay = (plan.seconds_after_injection if plan.seconds_after_injection is not None
                 else _USUAL_DELAY_S[plan.kind])
        acq = INJECTION_TIME_S + delay
        vol = _thicken(_source_volume(patient, plan.kind), plan.thickness_factor)
        arr = np.asarray(vol.array)
        base = _base(study_uid, for_uid, charset, attrs)
        base.SeriesInstanceUID = series_uid
        base.SeriesNumber = plan.series_number if plan.series_number is not None else number
        base.SeriesDescription = plan.description
        base.ProtocolName = "Liver 3-phase"
        base.SeriesTime = _tm(acq + 20.0)
        base.AcquisitionTime = _tm(acq)
        base.ImageType = list(plan.image_type)
        base.ConvolutionKernel = plan.kernel
        if plan.kind not in ("noncontrast", "localizer") and plan.contrast_tags:
            base.ContrastBolusAgent = "Iodinated contrast"
            base.ContrastBolusRoute = "IV"
            base.ContrastBolusStartTime = _tm(INJECTION_TIME_S)
        if plan.kind == "localizer":
            ds = copy.deepcopy(base)
            proj = arr.mean(axis=1)[::-1]  # coronal projection, superior row first
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = generate_uid()
            ds.InstanceNumber = 1
            ds.SliceThickness = "1"
            top_z = vol.origin[0] + (arr.shape[0] - 1) * vol.spacing[0]
            ds.ImagePositionPatient = [f"{vol.origin[2]:.4f}", "0", f"{top_z:.4f}"]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
            ds.PixelSpacing = [f"{vol.spacing[0]:g}", f"{vol.spacing[2]:g}"]
            ds.ContentTime = base.AcquisitionTime
            _pixels(ds, proj)
            files.append((ds, series_uid))
            continue
        for z in range(arr.shape[0]):
            ds = copy.deepcopy(base)
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = generate_uid()
            ds.InstanceNumber = arr.shape[0] - z  # scanners often number head to foot
            ds.SliceThickness = f"{vol.spacing[0]:g}"
            zpos = vol.origin[0] + z * vol.spacing[0]
            x0 = vol.origin[2] + (arr.shape[2] - 1) * vol.spacing[2] if plan.flip_x else (
                vol.origin[2])
            ds.ImagePositionPatient = [f"{x0:.4f}", f"{vol.origin[1]:.4f}", f"{zpos:.4f}"]
            ds.ImageOrientationPatient = ["-1" if plan.flip_x else "1", "0", "0", "0", "1",
                                          "0"]
            ds.PixelSpacing = [f"{vol.spacing[1]:g}", f"{vol.spacing[2]:g}"]
            ds.SliceLocation = f"{zpos:.4f}"
            ds.ContentTime = _tm(acq + 0.1 * z)
            ds.AcquisitionTime = _tm(acq + 0.05 * z)
            ds.AcquisitionNumber = 1
            _pixels(ds, arr[z][:, ::-1] if plan.flip_x else arr[z])
            files.append((ds, series_uid))
    rng.shuffle(files)
    for ds, _ in files:
        sub = out / f"d{rng.randrange(3)}" if nested else out
        sub.mkdir(exist_ok=True)
        _file(ds, sub / f"{rng.getrandbits(48):012x}")
    if extras:
        (out / "README.txt").write_text("synthetic study written by hccatom (not DICOM)\n")
        d = Dataset()
        d.SOPClassUID = "1.2.840.10008.1.3.10"
        d.SOPInstanceUID = generate_uid()
        d.FileSetID = "SYNTHETIC"
        _file(d, out / "DICOMDIR")
    return uids


def read_back_hu(path: str | Path) -> np.ndarray:
    """Pixel values of one written file in HU (tests)."""
    ds = pydicom.dcmread(path)
    return np.asarray(ds.pixel_array, dtype=np.float32) * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept)
