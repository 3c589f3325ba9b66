"""Write the small committed seed corpus ``fuzz/corpus/<target>/`` (run once; re-run to refresh).

    python fuzz/make_seeds.py

Seeds are valid or nearly valid inputs of a few hundred bytes to ~30 kB: crafted NIfTI files
(both endians, gzip, sform/qform), NRRD/MHA written by SimpleITK, one tiny DICOM slice, clinical
records, the demo bundle's manifest and a zip holding it. The DICOM target also reads the real
slices committed under ``tests/data/real`` (not copied here).
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from hostile import clinical_values, mha_text, nhdr_text, nifti1_bytes  # noqa: E402

from hccatom.demo import demo_bundle_path  # noqa: E402


def _put(target: str, name: str, data: bytes) -> None:
    folder = HERE / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def _sitk_bytes(suffix: str, compress: bool) -> bytes:
    arr = np.full((4, 6, 5), -1000, dtype=np.int16)
    arr[1:3, 2:4, 1:4] = 40
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.8, 0.8, 2.5))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"seed{suffix}"
        sitk.WriteImage(image, str(path), useCompression=compress)
        return path.read_bytes()


def main() -> None:
    """Write every seed."""
    import gzip

    srow = ((1.0, 0.0, 0.0, -4.0), (0.0, 1.0, 0.0, -4.0), (0.0, 0.0, 2.0, 0.0))
    _put("nifti", "int16.nii", nifti1_bytes())
    _put("nifti", "int16_big_endian.nii", nifti1_bytes(endian=">"))
    _put("nifti", "sform.nii", nifti1_bytes(srow=srow))
    _put("nifti", "qform.nii", nifti1_bytes(qform_code=1, quatern=(0.0, 0.0, 1.0)))
    _put("nifti", "float32.nii", nifti1_bytes(np.full((6, 6, 3), -1000.0, dtype=np.float32)))
    _put("nifti", "int16.nii.gz", gzip.compress(nifti1_bytes(srow=srow)))

    _put("nrrd", "raw.nrrd", _sitk_bytes(".nrrd", False))
    _put("nrrd", "gzip.nrrd", _sitk_bytes(".nrrd", True))
    _put("nrrd", "detached_header.nrrd", nhdr_text("x.raw").encode())
    _put("mha", "local.mha", _sitk_bytes(".mha", False))
    _put("mha", "compressed.mha", _sitk_bytes(".mha", True))
    _put("mha", "detached_header.mha", mha_text("x.raw").encode())

    slice_ = sitk.GetImageFromArray(np.full((8, 8), -1000, dtype=np.int16))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slice.dcm"
        sitk.WriteImage(slice_, str(path))
        _put("dicom", "tiny_slice.dcm", path.read_bytes())

    _put("clinical_json", "valid.json", json.dumps(clinical_values(), indent=1).encode())
    _put("clinical_json", "metadata.json",
         json.dumps(clinical_values(patient_id="X", case_id=1, notes="n")).encode())
    _put("clinical_json", "bad_values.json",
         json.dumps(clinical_values(albumin_g_per_l="38.5", hbv="yes", ecog=9)).encode())

    raw = (demo_bundle_path() / "manifest.json").read_bytes()
    _put("manifest", "demo_manifest.json", raw)
    _put("manifest", "minimal.json", b'{"schema_version": "1.0"}')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", raw)
        zf.writestr("segmentation/parity_report.json",
                    (demo_bundle_path() / "segmentation" / "parity_report.json").read_bytes())
    _put("bundle_zip", "demo_manifest_only.zip", buf.getvalue())


if __name__ == "__main__":
    main()
