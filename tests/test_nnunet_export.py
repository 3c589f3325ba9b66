"""``hccatom export nnunet``: spec values, ONNX parity, and the errors a site can hit."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("nnunetv2")

import torch

from hccatom.engines import OnnxRuntimeEngine
from hccatom.errors import CheckpointError, ExportError
from hccatom.export import nnunet_cli
from hccatom.export.nnunet_export import (
    label_meaning,
    load_checkpoint,
    parse_label_map,
)
from hccatom.segmentation import SegmentationSpec

pytestmark = pytest.mark.export

FIXTURE = Path(__file__).parent / "fixtures" / "nnunet"
MODEL = FIXTURE / "model" / "nnUNetTrainer__nnUNetPlans__3d_fullres"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nnunet_export")
    pp = tmp_path_factory.mktemp("pp") / "postprocessing.json"  # as nnU-Net writes it
    pp.write_text(json.dumps({
        "postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"] * 2,
        "postprocessing_kwargs": [{"labels_or_regions": [1, 2]}, {"labels_or_regions": 2}],
    }))
    rc = nnunet_cli.main(["--model-folder", str(MODEL), "--folds", "0", "--out", str(out),
                          "--no-window-before-segmentation", "--postprocessing", str(pp),
                          "--training-orientation", "LPS"])
    assert rc == 0
    return out


@pytest.fixture()
def model_copy(tmp_path: Path) -> Path:
    dst = tmp_path / MODEL.name
    shutil.copytree(MODEL, dst, ignore=shutil.ignore_patterns("fold_1"))
    return dst


def test_spec_values_come_from_the_plans(exported: Path) -> None:
    spec = SegmentationSpec.load(exported)
    plans = json.loads((MODEL / "plans.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    assert spec.patch_size == cfg["patch_size"]
    assert spec.target_spacing_mm == pytest.approx(cfg["spacing"])
    assert spec.transpose_forward == plans["transpose_forward"]
    assert spec.ct_intensity.mean == pytest.approx(props["mean"])
    assert spec.ct_intensity.percentile_99_5 == pytest.approx(props["percentile_99_5"])
    assert spec.resampling_data.order == 3 and spec.resampling_probabilities.order == 1
    assert spec.resampling_data.anisotropy_threshold == 3.0
    assert spec.window_before_segmentation is False  # recorded from the required flag
    assert spec.postprocessing is not None  # read from postprocessing.json, stored as data
    assert [st.labels for st in spec.postprocessing.steps] == [[1, 2], [2]]
    assert spec.training_orientation == "LPS"
    assert spec.mirror_axes == [0, 1, 2] and [f.fold for f in spec.folds] == [0]
    assert spec.labels.channel_names == ["background", "liver", "tumour"]
    committed = SegmentationSpec.load(FIXTURE / "export")
    assert committed.ct_intensity == spec.ct_intensity
    assert committed.patch_size == spec.patch_size


def test_parity_report_and_dynamic_batch(exported: Path) -> None:
    report = json.loads((exported / "parity_report.json").read_text())
    assert report["passed"] and report["folds"][0]["relative_max_diff"] <= 1e-4
    engine = OnnxRuntimeEngine(exported / "fold_0.onnx", device="cpu")
    (spec_in,) = engine.inputs
    assert isinstance(spec_in.shape[0], str) and spec_in.shape[1:] == (1, 24, 32, 40)
    x = np.random.default_rng(0).normal(size=(3, 1, 24, 32, 40)).astype(np.float32)
    assert engine.run({"image": x})["logits"].shape == (3, 3, 24, 32, 40)


def test_fixture_checkpoint_loads_safely() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ck = load_checkpoint(MODEL / "fold_0" / "checkpoint_final.pth")
    assert ck["trainer_name"] == "nnUNetTrainer"


def test_nnunet_style_checkpoint_loads_safely(tmp_path: Path) -> None:
    # nnU-Net's trainer logs numpy floats; they load with weights_only=True (numpy scalars
    # allowed), without the full-pickle fallback
    path = tmp_path / "ck.pth"
    logging = {"ema_fg_dice": [np.float64(0.5)], "lrs": [np.float32(0.01)]}
    torch.save({"network_weights": {}, "logging": logging, "device": torch.device("cpu")}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ck = load_checkpoint(path)
    assert ck["logging"]["ema_fg_dice"] == [0.5]


def test_unsafe_checkpoint_warns_then_loads(tmp_path: Path) -> None:
    from fractions import Fraction

    path = tmp_path / "ck.pth"
    torch.save({"network_weights": {}, "extra": Fraction(1, 3)}, path)
    with pytest.warns(UserWarning, match="weights_only=True"):
        ck = load_checkpoint(path)
    assert "network_weights" in ck
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_not_a_results_folder(tmp_path: Path, model_copy: Path) -> None:
    with pytest.raises(ExportError, match="does not exist"):
        nnunet_export(tmp_path / "nope", tmp_path / "out")
    (model_copy / "plans.json").unlink()
    with pytest.raises(ExportError, match=r"missing plans\.json"):
        nnunet_export(model_copy, tmp_path / "out")


def test_v1_model_is_refused(tmp_path: Path, model_copy: Path) -> None:
    (model_copy / "plans.pkl").write_bytes(b"")
    with pytest.raises(ExportError, match="nnU-Net v1"):
        nnunet_export(model_copy, tmp_path / "out")


def test_missing_configuration_and_folds(tmp_path: Path, model_copy: Path) -> None:
    with pytest.raises(ExportError, match=r"'2d' is not in plans\.json.*3d_fullres"):
        nnunet_export(model_copy, tmp_path / "out", configuration="2d")
    with pytest.raises(ExportError, match=r"folds \[3\]"):
        nnunet_export(model_copy, tmp_path / "out", folds=[3])


def test_non_ct_normalisation_is_refused(tmp_path: Path, model_copy: Path) -> None:
    plans = json.loads((model_copy / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["normalization_schemes"] = ["ZScoreNormalization"]
    (model_copy / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ExportError, match="only one CT channel with CTNormalization"):
        nnunet_export(model_copy, tmp_path / "out")


def test_mismatched_weights(tmp_path: Path, model_copy: Path) -> None:
    plans = json.loads((model_copy / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [
        4, 8, 16, 16
    ]
    (model_copy / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(CheckpointError, match="do not fit"):
        nnunet_export(model_copy, tmp_path / "out")


def test_label_mapping() -> None:
    ok = label_meaning({"labels": {"background": 0, "Liver": 1, "HCC tumor": 2}})
    assert ok.channel_to_label == [0, 1, 2]
    swapped = label_meaning({"labels": {"background": 0, "tumour": 1, "liver": 2, "vessel": 3}})
    assert swapped.channel_to_label == [0, 2, 1, 0] and swapped.liver_channel == 2
    odd = {"labels": {"background": 0, "organ": 1, "spot": 2}}
    with pytest.raises(ExportError, match=r"organ=1, spot=2.*--label-map"):
        label_meaning(odd)
    mapped = label_meaning(odd, parse_label_map("liver=1,tumour=2"))
    assert mapped.liver_channel == 1 and mapped.tumour_channel == 2
    with pytest.raises(ExportError, match="region-based"):
        label_meaning({"labels": {"background": 0, "liver": [1, 2], "tumour": 2},
                       "regions_class_order": [1, 2]})
    with pytest.raises(ExportError):
        parse_label_map("liver=1")
    with pytest.raises(ExportError):
        label_meaning(odd, parse_label_map("liver=1,tumour=7"))


def test_cli_bad_input_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = nnunet_cli.main(["--model-folder", str(tmp_path), "--out", str(tmp_path / "o"),
                          "--window-before-segmentation"])
    assert rc == 2
    assert "missing dataset.json, plans.json" in capsys.readouterr().err


def test_cli_requires_the_window_choice(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        nnunet_cli.main(["--model-folder", str(tmp_path), "--out", str(tmp_path / "o")])
    assert info.value.code == 2
    assert "--window-before-segmentation" in capsys.readouterr().err


def nnunet_export(folder: Path, out: Path, **kw: object) -> object:
    from hccatom.export.nnunet_export import export_nnunet

    return export_nnunet(folder, out, **kw)  # type: ignore[arg-type]


def test_parity_failure_raises_and_cli_exits_1(
    tmp_path: Path, model_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hccatom.errors import ParityError
    from hccatom.export import nnunet_export as mod

    def bad(*a: object, **k: object) -> dict[str, object]:
        return {"checks": [], "relative_max_diff": 3e-3, "passed": False}

    monkeypatch.setattr(mod, "parity", bad)
    with pytest.raises(ParityError, match=r"3\.00e-03 > 1e-04"):
        nnunet_export(model_copy, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "parity_report.json").read_text())
    assert report["passed"] is False
    rc = nnunet_cli.main(["--model-folder", str(model_copy), "--out", str(tmp_path / "o2"),
                          "--no-window-before-segmentation", "--training-orientation", "LPS"])
    assert rc == 1


# --- training orientation -------------------------------------------------------------------
def _raw_dataset(root: Path, codes: list[str], reader: str | None = None) -> Path:
    import SimpleITK as sitk

    (root / "imagesTr").mkdir(parents=True)
    ds = {"file_ending": ".nii.gz", "channel_names": {"0": "CT"}}
    if reader:
        ds["overwrite_image_reader_writer"] = reader
    (root / "dataset.json").write_text(json.dumps(ds))
    for i, code in enumerate(codes):
        img = sitk.Image(4, 5, 6, sitk.sitkInt16)
        img.SetDirection(sitk.DICOMOrientImageFilter.GetDirectionCosinesFromOrientation(code))
        sitk.WriteImage(img, str(root / "imagesTr" / f"case_{i:03d}_0000.nii.gz"))
    return root


def test_training_orientation_from_raw_headers(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from hccatom.export.nnunet_orientation import (
        infer_training_orientation,
        resolve_training_orientation,
    )

    ras = _raw_dataset(tmp_path / "ras", ["RAS", "RAS"])
    assert infer_training_orientation(ras) == "RAS"
    mixed = _raw_dataset(tmp_path / "mixed", ["RAS", "LPS"])
    with pytest.raises(ExportError, match="several orientations"):
        infer_training_orientation(mixed)
    assert resolve_training_orientation("LPS", mixed, None) == "LPS"  # the user chose
    reorienting = _raw_dataset(tmp_path / "reo", ["LPS"], reader="NibabelIOWithReorient")
    assert infer_training_orientation(reorienting) == "RAS"  # nnU-Net reoriented on read
    with pytest.raises(ExportError, match="contradicts"):
        resolve_training_orientation("LPS", ras, None)
    with pytest.raises(ExportError, match="LPS or RAS"):
        resolve_training_orientation("XYZ", None, None)
    # $nnUNet_raw/<dataset> is used when present
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    assert resolve_training_orientation(None, None, "ras") == "RAS"
    assert resolve_training_orientation(None, None, "absent") is None


def test_cli_requires_a_training_orientation(model_copy: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("nnUNet_raw", raising=False)
    rc = nnunet_cli.main(["--model-folder", str(model_copy), "--out", str(tmp_path / "o"),
                          "--no-window-before-segmentation"])
    assert rc == 2
    assert "--training-orientation" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
