"""Write the small committed seed corpus ``fuzz/corpus/<target>/`` (run once; re-run to refresh).

    python fuzz/make_seeds.py                      # every target
    python fuzz/make_seeds.py cohort_csv           # only the named targets' seeds

Seeds are valid or nearly valid inputs of a few hundred bytes to ~30 kB: crafted NIfTI files
(both endians, gzip, sform/qform), NRRD/MHA written by SimpleITK, one tiny DICOM slice, clinical
records, the demo bundle's manifest and a zip holding it, cohort tables, small synthetic DICOM
studies (headers only, pixel data stripped) and serve requests. The DICOM target also reads
the real slices committed under ``tests/data/real`` (not copied here).
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

#: Targets whose seeds are written (all when empty); set from the command line.
_ONLY: set[str] = set()


def _put(target: str, name: str, data: bytes) -> None:
    if _ONLY and target not in _ONLY:
        return
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
    _cohort_seeds()
    _study_seeds()
    _serve_seeds()


def _cohort_seeds() -> None:
    fields = clinical_values()
    head = ["case_id", "treatment", "set", "response", "os_months", "os_event", *fields,
            "score_TACE", "score_HAIC", "score_TC", "score_HC"]
    values = [str(v).lower() if isinstance(v, bool) else str(v) for v in fields.values()]
    rows = [
        ["c1", "TACE", "train", "1", "12.5", "0", *values, "0.7", "0.2", "0.4", "0.1"],
        ["c2", "HAIC + systemic", "external", "", "30", "1", *values, "0.1", "0.8", "0.3",
         "0.6"],
    ]
    text = "\n".join(",".join(r) for r in [head, *rows]) + "\n"
    _put("cohort_csv", "scores.csv", text.encode())
    ct_head = "case_id,treatment,arterial,portal,clinical_json,response\n"
    _put("cohort_csv", "paths.csv",
         (ct_head + "c1,TC,ct/a.nii.gz,ct/p.nii.gz,c1.json,0\nc1,XX,,,,2\n").encode())
    _put("cohort_csv", "study.csv",
         b"case_id,treatment,study,arterial_series_uid,portal_series_uid\n"
         b"s1,TACE,dicom/s1,1.2.3,1.2.4\n")


def _study_seeds() -> None:
    import pydicom

    sys.path.insert(0, str(HERE))
    from targets import STUDY_FILE_MARK

    from hccatom.dicom.synthetic_study import default_plans, write_study
    from hccatom.synthetic import ScanSpec, generate_patient

    small = ScanSpec(shape_yx=(16, 16), spacing_yx_mm=(20.0, 20.0), slice_thickness_mm=5.0,
                     n_slices=4)
    with tempfile.TemporaryDirectory() as tmp:
        write_study(generate_patient(1, small), tmp, default_plans(), nested=False)
        by_series: dict[str, list[bytes]] = {}
        for path in sorted(Path(tmp).rglob("*")):
            if not path.is_file():
                continue
            try:
                ds = pydicom.dcmread(path)
            except pydicom.errors.InvalidDicomError:
                continue
            if "PixelData" in ds:
                del ds.PixelData  # headers are what the index reads
            out = io.BytesIO()
            ds.save_as(out)
            by_series.setdefault(str(ds.get("SeriesDescription", "")), []).append(
                out.getvalue())
    for i, (_, files) in enumerate(sorted(by_series.items())):
        _put("dicom_study", f"series{i}.bin", STUDY_FILE_MARK.join(files[:3]))
    firsts = [files[0] for _, files in sorted(by_series.items())]
    _put("dicom_study", "mixed.bin", STUDY_FILE_MARK.join(firsts[:6]))


def _serve_seeds() -> None:
    geometry = {"spacing_zyx_mm": [2.5, 0.8, 0.8], "origin": [0.0, 0.0, 0.0],
                "direction": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "notes": []}
    req = {"clinical": clinical_values(), "arterial": geometry, "portal": geometry}
    _put("serve_request", "phases.json", json.dumps(req).encode())
    _put("serve_request", "study_path.json",
         json.dumps({"clinical": clinical_values(), "study_path": "s1"}).encode())
    payload = {"type": "ClinicalInputError", "message": "m", "problems": [["age", "x"]],
               "phase": None}
    import base64

    token = base64.b64encode(json.dumps(payload).encode()).decode()
    _put("serve_request", "error_text.txt", f"HCCATOM-ERROR:{token} ClinicalInputError: m".encode())


if __name__ == "__main__":
    _ONLY.update(sys.argv[1:])
    main()
