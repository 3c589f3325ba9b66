"""Index a DICOM study folder into series, reading headers only.

:func:`index_study` walks a folder recursively, reads every file's header with pydicom
(``stop_before_pixels``; only the tags below), skips what is not DICOM (counted), ignores
``DICOMDIR`` files (the walk finds every file they would list) and groups the images by
Series Instance UID. Each :class:`SeriesInfo` carries the tags that phase selection needs
and its instances sorted along the slice normal (row x column direction; inferior to
superior for the usual axial orientation).

Time-of-day tags (TM) are kept as seconds after midnight; dates are not read.

Progress (``progress=``): a study of thousands of files takes a while, so the index reports
stage ``index_study`` as :class:`~hccatom.progress_events.ProgressEvent` events: started
(0 of 1), files read of files found with ``detail`` ``"<n> series"`` at most every
:data:`PROGRESS_INTERVAL_S` seconds and after the last file, then done (1 of 1, ``detail``
``"<n> series"``). ``True`` shows them on stderr the way the command line
does (:class:`hccatom.cli_progress.StderrProgress`).
"""

from __future__ import annotations

import logging
import math
import os
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.tag import Tag

from hccatom.dicom.errors import DicomStudyError
from hccatom.path_checks import (
    check_input_folder,
    open_regular_file,
    os_reason,
    special_kind,
)
from hccatom.progress_events import ProgressCallback, ProgressEvent

__all__ = ["INDEX_STAGE", "PROGRESS_INTERVAL_S", "SAME_SPACING_MM", "InstanceInfo",
           "SeriesInfo", "StudyIndex", "index_study", "parse_time"]

log = logging.getLogger(__name__)

_TAGS = [Tag(k) for k in (
    "SpecificCharacterSet", "ImageType", "SOPClassUID", "SOPInstanceUID", "AcquisitionTime",
    "ContentTime", "SeriesTime", "Modality", "SeriesDescription", "ProtocolName",
    "ContrastBolusAgent", "ContrastBolusRoute", "ContrastBolusStartTime", "SliceThickness",
    "ConvolutionKernel", "StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber",
    "InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient",
    "FrameOfReferenceUID", "Rows", "Columns", "PixelSpacing", "NumberOfFrames",
)]

SAME_SPACING_MM = 0.01
"""Slice thickness and position spacing closer than this are shown as one number."""
INDEX_STAGE = "index_study"
"""The stage name of the index's progress events."""
PROGRESS_INTERVAL_S = 0.5
"""At most one count event per this many seconds (plus one after the last file)."""

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


def parse_time(value: object) -> float | None:
    """DICOM TM (``HHMMSS.ffffff`` or ``HH:MM:SS``) -> seconds after midnight, or None."""
    text = str(value or "").strip().replace(":", "")
    if len(text) < 2 or not text[:2].isdigit():
        return None
    try:
        hh = int(text[0:2])
        mm = int(text[2:4]) if len(text) >= 4 else 0
        ss = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    return hh * 3600.0 + mm * 60.0 + ss


#: What pydicom's lazy value conversion raises on a malformed element (fuzzing found a US
#: element of odd length: ``BytesLengthException``, raised on first access).
_DECODE_ERRORS = (BytesLengthException, ValueError, TypeError, KeyError, OverflowError,
                  LookupError, struct.error, AttributeError, NotImplementedError)


def _values_decode(ds: pydicom.Dataset) -> bool:
    """Convert every element read (pydicom converts lazily, on first access) so that a
    malformed one marks the file unreadable here, not later as a raw exception."""
    try:
        for elem in ds.iterall():
            _ = elem.value
        meta = ds.get("file_meta")
        if meta is not None:
            for elem in meta.iterall():
                _ = elem.value
    except _DECODE_ERRORS:
        return False
    return True


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue | list | tuple):
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _floats(ds: pydicom.Dataset, keyword: str, n: int) -> tuple[float, ...] | None:
    value = ds.get(keyword)
    try:
        out = tuple(float(v) for v in value) if value is not None else ()
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def _float(ds: pydicom.Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    try:
        out = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return out if out is not None and math.isfinite(out) else None


def _int(ds: pydicom.Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class InstanceInfo:
    """One image file of a series (header values only)."""

    path: Path
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    position: tuple[float, float, float] | None
    """Image Position (Patient), LPS mm, (x, y, z) as DICOM lists it."""
    acquisition_time_s: float | None
    content_time_s: float | None


@dataclass
class SeriesInfo:
    """One series of a study: the tags that matter for phase selection, and its files."""

    series_instance_uid: str
    study_instance_uid: str
    series_number: int | None
    modality: str
    image_type: tuple[str, ...]
    sop_class_uid: str
    description: str
    """Series Description, free text (may hold PHI: never put it in messages or logs)."""
    protocol: str
    """Protocol Name, free text (same caution)."""
    contrast_agent: str
    contrast_route: str
    contrast_start_s: float | None
    series_time_s: float | None
    slice_thickness_mm: float | None
    pixel_spacing_mm: tuple[float, float] | None
    """(row spacing, column spacing) = (y, x) for an axial series."""
    rows: int | None
    columns: int | None
    orientation: tuple[float, ...] | None
    """Image Orientation (Patient): row direction cosines then column direction cosines."""
    kernel: str
    frame_of_reference_uid: str
    multi_frame: bool = False
    character_set: str = ""
    instances: list[InstanceInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Why the series cannot be read as one volume (mixed orientation, duplicates, ...)."""

    # --- derived -----------------------------------------------------------------------
    @property
    def n_slices(self) -> int:
        """Number of image files."""
        return len(self.instances)

    @property
    def normal(self) -> np.ndarray | None:
        """Unit slice normal (row x column direction), LPS; None without orientation."""
        if self.orientation is None:
            return None
        n = np.cross(self.orientation[:3], self.orientation[3:6])
        norm = float(np.linalg.norm(n))
        return n / norm if norm > 0 else None

    @property
    def is_axial(self) -> bool:
        """Slices within ~25 degrees of the axial plane."""
        n = self.normal
        return n is not None and abs(float(n[2])) >= 0.9

    @property
    def slice_spacing_mm(self) -> float | None:
        """Median distance between sorted slice positions along the normal."""
        z = self.slice_positions_mm()
        if z is None or len(z) < 2:
            return None
        return float(np.median(np.diff(z)))

    @property
    def acquisition_time_s(self) -> float | None:
        """Earliest Acquisition Time of its images (else Content Time, else Series Time)."""
        for attr in ("acquisition_time_s", "content_time_s"):
            times = [t for t in (getattr(i, attr) for i in self.instances) if t is not None]
            if times:
                return min(times)
        return self.series_time_s

    def slice_positions_mm(self) -> np.ndarray | None:
        """Instance positions along the normal (mm), in instance list order."""
        n = self.normal
        if n is None or any(i.position is None for i in self.instances):
            return None
        return np.array([float(np.dot(i.position, n)) for i in self.instances])  # type: ignore[arg-type]

    def spacing_text(self) -> str:
        """The slice spacing (from the slice positions), with the Slice Thickness tag beside
        it only where the two differ: ``"spacing 2 mm (slice thickness 3 mm: overlapping
        slices)"``; ``"spacing 1.25 mm"`` where they agree. Scanners reconstruct overlapping
        (thickness > spacing) or gapped slices; the volume's z spacing is the position
        spacing, so that is the one to show as spacing."""
        spacing, thick = self.slice_spacing_mm, self.slice_thickness_mm
        if spacing is None:
            return f"slice thickness {thick:g} mm" if thick is not None else "spacing ? mm"
        text = f"spacing {round(spacing, 3):g} mm"
        if thick is None or abs(thick - spacing) <= SAME_SPACING_MM:
            return text
        why = "overlapping slices" if thick > spacing else "gaps between slices"
        return f"{text} (slice thickness {thick:g} mm: {why})"

    def brief(self) -> str:
        """A one-line description safe for messages: no free text, no patient data."""
        num = f"#{self.series_number}" if self.series_number is not None else "#?"
        return (f"series {num} UID {self.series_instance_uid or '<none>'} ({self.modality or '?'}"
                f", {self.n_slices} slices, {self.spacing_text()})")


@dataclass(frozen=True)
class StudyIndex:
    """All series found under a folder, and what was skipped."""

    root: Path
    series: list[SeriesInfo]
    n_files: int
    skipped_non_dicom: int
    skipped_dicomdir: int
    unreadable: int
    """DICOM files whose header could not be parsed (truncated, corrupt)."""
    skipped_special: int = 0
    """Entries never opened: FIFOs, devices, sockets, broken links, link loops."""

    def listing(self, notes: Mapping[str, str] | None = None) -> str:
        """What was found, one line per series (:meth:`SeriesInfo.brief`: no free text),
        each followed by ``notes[its Series Instance UID]`` where given."""
        notes = notes or {}
        skipped = [f"{n} {what}" for n, what in (
            (self.skipped_non_dicom, "not DICOM"), (self.unreadable, "unreadable"),
            (self.skipped_dicomdir, "DICOMDIR"), (self.skipped_special, "not regular files"))
            if n]
        head = (f"{self.n_files} file{'' if self.n_files == 1 else 's'}, {len(self.series)} "
                f"series" + (f" ({', '.join(skipped)})" if skipped else ""))
        return "\n".join([head, *(
            f"  - {s.brief()}" + (f", {notes[uid]}" if (uid := s.series_instance_uid) in notes
                                  else "") for s in self.series)])

    def by_uid(self, uid: str) -> SeriesInfo:
        """The series with this Series Instance UID; DicomStudyError if absent."""
        for s in self.series:
            if s.series_instance_uid == uid:
                return s
        raise DicomStudyError(
            f"Series Instance UID {uid!r} is not in the study under {self.root}; it holds "
            f"{len(self.series)} series: " + "; ".join(s.brief() for s in self.series) + "."
        )


def _walk(root: Path, skipped: list[str]) -> Iterator[Path]:
    """Regular files under ``root``. Folder links are not followed (``os.walk``'s default:
    a link to a parent cannot loop); FIFOs, devices, sockets, broken links and link loops
    are never opened (a FIFO blocks forever, ``/dev/zero`` never ends): they are appended to
    ``skipped`` as ``"name (kind)"``. A folder that cannot be listed raises."""
    def refuse(exc: OSError) -> None:
        raise DicomStudyError(f"Study folder {root}: {exc.filename} cannot be listed "
                              f"({os_reason(exc)}); fix its permissions.")

    for dirpath, dirnames, filenames in os.walk(root, onerror=refuse):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                mode = os.stat(path).st_mode
            except OSError:
                skipped.append(f"{name} (broken link or link loop)")
                continue
            kind = special_kind(mode)
            if kind is not None:
                skipped.append(f"{name} ({kind})")
            elif not stat.S_ISDIR(mode):
                yield path


def _new_series(ds: pydicom.Dataset, uid: str, media_class: str) -> SeriesInfo:
    spacing = _floats(ds, "PixelSpacing", 2)
    image_type = tuple(v.strip().upper() for v in _text(ds, "ImageType").split("\\") if v)
    return SeriesInfo(
        series_instance_uid=uid,
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_number=_int(ds, "SeriesNumber"),
        modality=_text(ds, "Modality").upper(),
        image_type=image_type,
        sop_class_uid=_text(ds, "SOPClassUID") or media_class,
        description=_text(ds, "SeriesDescription"),
        protocol=_text(ds, "ProtocolName"),
        contrast_agent=_text(ds, "ContrastBolusAgent"),
        contrast_route=_text(ds, "ContrastBolusRoute"),
        contrast_start_s=parse_time(ds.get("ContrastBolusStartTime")),
        series_time_s=parse_time(ds.get("SeriesTime")),
        slice_thickness_mm=_float(ds, "SliceThickness"),
        pixel_spacing_mm=(spacing[0], spacing[1]) if spacing else None,
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        orientation=_floats(ds, "ImageOrientationPatient", 6),
        kernel=_text(ds, "ConvolutionKernel"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        multi_frame=(_int(ds, "NumberOfFrames") or 1) > 1,
        character_set=_text(ds, "SpecificCharacterSet"),
    )


def _finish(series: SeriesInfo) -> None:
    """Sort instances along the normal and record what prevents reading one volume."""
    z = series.slice_positions_mm()
    if z is None:
        series.instances.sort(key=lambda i: (i.instance_number or 0, str(i.path)))
        if series.n_slices > 1:
            series.problems.append("image position or orientation missing")
        return
    order = np.argsort(z, kind="stable")
    series.instances[:] = [series.instances[i] for i in order]
    zs = z[order]
    if len(zs) > 1 and float(np.min(np.diff(zs))) <= 1e-3:
        series.problems.append("two images share one slice position (several acquisitions?)")


def _progress_sink(progress: bool | ProgressCallback | None
                   ) -> tuple[ProgressCallback | None, Callable[[], None]]:
    """(callback or None, close): ``True`` shows the events on stderr."""
    if progress is True:
        from hccatom.cli_progress import StderrProgress

        shown = StderrProgress(sys.stderr)
        return shown, shown.close
    if progress is False or progress is None:
        return None, lambda: None
    if not callable(progress):
        raise DicomStudyError(f"index_study: progress must be True, False or a callable taking "
                              f"a ProgressEvent, not {type(progress).__name__}.")
    return progress, lambda: None


def index_study(root: str | Path, *,
                progress: bool | ProgressCallback | None = False) -> StudyIndex:
    """Index every DICOM image under ``root`` (recursively) by series; headers only.

    Files that are not DICOM (no ``DICM`` preamble) are skipped and counted; ``DICOMDIR``
    files are ignored (counted). Raises :class:`DicomStudyError` when ``root`` is missing
    or holds no DICOM image. ``progress``: a callable receiving
    :class:`~hccatom.progress_events.ProgressEvent` events (see the module doc), ``True`` to
    show them on stderr, ``False``/``None`` for none.
    """
    base = Path(root)
    if not base.exists():
        raise DicomStudyError(f"Study folder not found: {base}. Pass an existing folder.")
    if not base.is_dir():
        raise DicomStudyError(f"{base} is a file; pass the study folder that holds the series.")
    check_input_folder(base, "Study folder", error=DicomStudyError)
    sink, close = _progress_sink(progress)
    t0 = time.monotonic()

    def report(done: int, total: int, detail: str = "") -> None:
        if sink is not None:
            sink(ProgressEvent(INDEX_STAGE, done, total, time.monotonic() - t0, detail))

    report(0, 1)
    counts = _Counts()
    series: dict[str, SeriesInfo] = {}
    special: list[str] = []
    try:
        paths = list(_walk(base, special))
        counts.files = len(paths)
        last = t0
        for done, path in enumerate(paths, start=1):
            _index_file(path, series, counts, special)
            now = time.monotonic()
            if len(paths) > 1 and (done == len(paths) or now - last >= PROGRESS_INTERVAL_S):
                last = now
                report(done, len(paths), f"{len(series)} series")
    finally:
        report(1, 1, f"{len(series)} series")
        close()
    if special:
        log.warning("Study folder %s: %d entries skipped unopened (not regular files): %s",
                    base, len(special), ", ".join(special[:5])
                    + (f" and {len(special) - 5} more" if len(special) > 5 else ""))
    log.info("Study indexed: %d files, %d series, %d not DICOM, %d unreadable, %d DICOMDIR, "
             "%d skipped unopened", counts.files, len(series), counts.non_dicom,
             counts.unreadable, counts.dicomdir, len(special))
    for info in series.values():
        _finish(info)
    if not series:
        raise DicomStudyError(
            f"No DICOM image found under {base} ({counts.files} files, {counts.non_dicom} not "
            f"DICOM, {counts.unreadable} unreadable). Pass the folder of a DICOM study."
        )
    ordered = sorted(series.values(), key=lambda s: (
        s.series_number if s.series_number is not None else 1 << 30, s.series_instance_uid))
    return StudyIndex(root=base, series=ordered, n_files=counts.files,
                      skipped_non_dicom=counts.non_dicom, skipped_dicomdir=counts.dicomdir,
                      unreadable=counts.unreadable, skipped_special=len(special))


@dataclass
class _Counts:
    files: int = 0
    non_dicom: int = 0
    dicomdir: int = 0
    unreadable: int = 0


def _index_file(path: Path, series: dict[str, SeriesInfo], counts: _Counts,
                special: list[str]) -> None:
    """Read one file's header into ``series`` (or count why not, or add it to ``special``)."""
    try:  # read through the checked descriptor: a FIFO swapped in since is skipped
        fh = open_regular_file(path, "DICOM file", error=DicomStudyError)
    except DicomStudyError:
        special.append(f"{path.name} (not a regular file when opened)")
        return
    except OSError:
        counts.unreadable += 1
        return
    try:
        with fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True, specific_tags=_TAGS)
    except InvalidDicomError:
        counts.non_dicom += 1
        return
    except (OSError, EOFError, *_DECODE_ERRORS):
        counts.unreadable += 1
        return
    if not _values_decode(ds):  # a malformed element among the tags read
        counts.unreadable += 1
        return
    media_class = str(getattr(ds.get("file_meta", None), "MediaStorageSOPClassUID", ""))
    if path.name.upper() == "DICOMDIR" or media_class == "1.2.840.10008.1.3.10":
        counts.dicomdir += 1
        return
    uid = _text(ds, "SeriesInstanceUID") or f"<no series UID in {path.parent}>"
    info = series.get(uid)
    if info is None:
        info = series[uid] = _new_series(ds, uid, media_class)
    elif _floats(ds, "ImageOrientationPatient", 6) not in (None, info.orientation) and (
        "mixed image orientations" not in info.problems
    ):
        info.problems.append("mixed image orientations")
    pos = _floats(ds, "ImagePositionPatient", 3)
    info.instances.append(InstanceInfo(
        path=path,
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID") or media_class,
        instance_number=_int(ds, "InstanceNumber"),
        position=(pos[0], pos[1], pos[2]) if pos else None,
        acquisition_time_s=parse_time(ds.get("AcquisitionTime")),
        content_time_s=parse_time(ds.get("ContentTime")),
    ))


def files_of(series: SeriesInfo) -> Sequence[str]:
    """The series' file paths in slice order (ascending along the slice normal)."""
    return [str(i.path) for i in series.instances]
