"""The orientation an nnU-Net model was trained on, from its raw training images (build time).

nnU-Net trains on the arrays as its reader returns them: ``SimpleITKIO`` and ``NibabelIO``
give the stored voxel order (the header's orientation), ``NibabelIOWithReorient`` reorients
every image to RAS+ first. So the training orientation is read from the headers of
``imagesTr`` (only the headers: ``ReadImageInformation``), unless ``dataset.json`` names the
reorienting reader. Images stored in several orientations have no single answer: the export
then needs ``--training-orientation``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from hccatom.errors import ExportError
from hccatom.segmentation.orientation import is_code

log = logging.getLogger(__name__)

REORIENTING_READERS = ("NibabelIOWithReorient",)


def raw_dataset_folder(dataset_name: str) -> Path | None:
    """``$nnUNet_raw/<dataset_name>`` when that folder exists, else None."""
    root = os.environ.get("nnUNet_raw")  # noqa: SIM112 - nnU-Net's own variable name
    if not root:
        return None
    folder = Path(root) / dataset_name
    return folder if (folder / "imagesTr").is_dir() else None


def _stored_orientations(folder: Path) -> Counter[str]:
    """How many training images are stored in each orientation."""
    import SimpleITK as sitk

    ds_file = folder / "dataset.json"
    try:
        dataset: dict[str, Any] = json.loads(ds_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {ds_file}: {exc}; give the nnU-Net raw dataset folder "
                          "(it holds dataset.json and imagesTr/)") from exc
    reader_name = str(dataset.get("overwrite_image_reader_writer", "None"))
    if reader_name in REORIENTING_READERS:
        return Counter({"RAS": 1})
    ending = str(dataset.get("file_ending", ".nii.gz"))
    files = sorted((folder / "imagesTr").glob(f"*_0000{ending}"))
    if not files:
        raise ExportError(f"no training images *_0000{ending} in {folder / 'imagesTr'}")
    codes: Counter[str] = Counter()
    for f in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(f))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise ExportError(f"cannot read the header of {f}: {exc}") from exc
        direction = reader.GetDirection()
        if len(direction) != 9:
            raise ExportError(f"{f} is not a 3-D image")
        codes[sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(direction)] += 1
    return codes


def infer_training_orientation(raw_dataset: str | Path) -> str:
    """The orientation code (x, y, z letters) of every training image, or ExportError."""
    folder = Path(raw_dataset)
    codes = _stored_orientations(folder)
    if len(codes) > 1:
        raise ExportError(
            f"the training images in {folder / 'imagesTr'} are stored in several orientations "
            f"({dict(codes)}); nnU-Net trained on each as stored, so no single orientation "
            "describes the model. Pass --training-orientation to choose the one to record."
        )
    return next(iter(codes))


def resolve_training_orientation(
    code: str | None, raw_dataset: str | Path | None, dataset_name: str | None
) -> str | None:
    """The code to record: the one given, else inferred from the raw dataset (given, or
    ``$nnUNet_raw/<dataset_name>``); a given code that contradicts the images is refused.
    None when nothing is given and no raw dataset is found."""
    if code is not None and not is_code(code):
        raise ExportError(f"--training-orientation {code!r}: use letters such as LPS or RAS")
    folder = Path(raw_dataset) if raw_dataset is not None else (
        raw_dataset_folder(dataset_name) if dataset_name else None
    )
    if folder is None:
        return code
    stored = _stored_orientations(folder)
    if code is not None and len(stored) > 1:
        log.warning("training images are stored in several orientations %s; recording %s as "
                    "given", dict(stored), code)
        return code
    inferred = infer_training_orientation(folder)
    if code is not None and code != inferred:
        raise ExportError(
            f"--training-orientation {code} contradicts the training images in {folder}, "
            f"which are stored {inferred}"
        )
    log.info("training orientation %s (from the headers in %s)", inferred, folder)
    return inferred


__all__ = ["infer_training_orientation", "raw_dataset_folder", "resolve_training_orientation"]
