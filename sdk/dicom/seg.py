"""DICOM SEG (highdicom) of liver and tumour on a source series' own grid.

Segment 1 "Liver" (category SCT 123037004 Anatomical Structure, type SCT 10200004 Liver)
holds liver parenchyma; segment 2 "Liver tumour" (category SCT 49755003 Morphologically
Altered Structure, type SCT 108369006 Neoplasm, anatomic region SCT 10200004 Liver: a
neoplasm of the liver) holds tumour voxels. The segments do not overlap (our label map);
the whole organ is their union. BINARY segmentation, one frame per source image holding
either segment (empty frames omitted), each frame referencing its source SOP instance.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from hccatom.dicom.errors import no_phi_warnings

__all__ = ["LIVER", "TUMOUR", "algorithm_identification", "build_seg"]

LIVER = 1
"""Segment number of the liver parenchyma."""
TUMOUR = 2
"""Segment number of the tumour."""

_ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")
_ALTERED_STRUCTURE = Code("49755003", "SCT", "Morphologically Altered Structure")


def algorithm_identification(name: str, version: str) -> hd.AlgorithmIdentificationSequence:
    """Algorithm identification: the bundle's name and version (family: AI)."""
    return hd.AlgorithmIdentificationSequence(
        name=name, family=codes.cid7162.ArtificialIntelligence, version=version)


def _segments(algorithm: hd.AlgorithmIdentificationSequence) -> list[hd.seg.SegmentDescription]:
    return [
        hd.seg.SegmentDescription(
            segment_number=LIVER, segment_label="Liver",
            segmented_property_category=_ANATOMICAL_STRUCTURE,
            segmented_property_type=codes.SCT.Liver,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(), tracking_id="liver",
        ),
        hd.seg.SegmentDescription(
            segment_number=TUMOUR, segment_label="Liver tumour",
            segmented_property_category=_ALTERED_STRUCTURE,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[codes.SCT.Liver],
            tracking_uid=hd.UID(), tracking_id="liver tumour",
        ),
    ]


def build_seg(
    source_images: Sequence[pydicom.Dataset],
    segments_zyx: np.ndarray,
    *,
    algorithm: hd.AlgorithmIdentificationSequence,
    series_number: int,
    series_description: str,
    software_version: str,
) -> hd.seg.Segmentation:
    """A BINARY SEG: ``segments_zyx`` (images, rows, columns) holds 0, LIVER or TUMOUR per
    pixel, images in the order of ``source_images``."""
    labels = np.ascontiguousarray(segments_zyx, dtype=np.uint8)
    if labels.shape[0] != len(source_images):
        raise ValueError(f"{labels.shape[0]} label images for {len(source_images)} sources")
    with no_phi_warnings():
        seg = _segmentation(source_images, labels, algorithm, series_number,
                            software_version)
    seg.SeriesDescription = series_description
    return seg


def _segmentation(source_images: Sequence[pydicom.Dataset], labels: np.ndarray,
                  algorithm: hd.AlgorithmIdentificationSequence, series_number: int,
                  software_version: str) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=list(source_images),
        pixel_array=labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segments(algorithm),
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="hccatom",
        manufacturer_model_name="hccatom",
        software_versions=software_version,
        device_serial_number="none",
        content_description="liver and tumour (research use only)",
        content_label="HCCATOM",
        omit_empty_frames=True,
    )
