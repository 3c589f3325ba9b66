"""End to end through the export code: tiny SELECTION models exported to ONNX (H2's exporter)
and the committed tiny nnU-Net v2 model exported by ``hccatom export nnunet`` (H3's), built
into a bundle by the CLI, verified, and run through ``Predictor`` and ``hccatom recommend``
on synthetic CT. The scores are checked against the PyTorch models run on the very images
the chain produced, so the whole runtime path is held to the export's parity.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.export, pytest.mark.slow]
torch = pytest.importorskip("torch")

from fixtures.bundle.helpers import clinical_example  # noqa: E402

from hccatom.atom import MODELS, decide  # noqa: E402
from hccatom.bundle import load_bundle, verify_bundle  # noqa: E402
from hccatom.chain import encode_clinical, phase_image, prepare_phase  # noqa: E402
from hccatom.cli import main  # noqa: E402
from hccatom.clinical import ClinicalVariables  # noqa: E402
from hccatom.ct_io import read_ct, write_volume  # noqa: E402
from hccatom.predictor import Predictor  # noqa: E402
from hccatom.recommendation import Recommendation  # noqa: E402

ROOT = Path(__file__).resolve().parent
NNUNET = ROOT / "fixtures" / "nnunet"
MODEL_FOLDER = NNUNET / "model" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
VOLUME = NNUNET / "volumes" / "typical_ct.nii.gz"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    from hccatom.export.nnunet_export import export_nnunet
    from hccatom.export.selection_model import SelectionModel, init_random
    from hccatom.export.selection_onnx import export_fused

    tmp = tmp_path_factory.mktemp("export")
    models = {c: init_random(SelectionModel("tiny"), seed=40 + i).eval()
              for i, c in enumerate(MODELS)}
    export_fused(models, tmp / "fused", exporter="legacy")
    committed = NNUNET / "export"
    if (committed / "segmentation_spec.json").is_file():
        seg = committed
    else:
        export_nnunet(MODEL_FOLDER, tmp / "seg", folds=[0])
        seg = tmp / "seg"
    thresholds = tmp / "thresholds.json"
    thresholds.write_text(json.dumps({"TACE": 0.45, "HAIC": 0.5, "TC": 0.55, "HC": 0.5}))
    bundle = tmp / "bundle.zip"
    safety = tmp / "safety.json"  # the fixture phantoms are small: a liver of ~150 mL
    safety.write_text(json.dumps({"liver_volume_min_ml": 50.0}))
    code = main(["bundle", "build", "--no-window-before-segmentation", "--safety", str(safety),
                 "--segmentation", str(seg), "--fused", str(tmp / "fused"),
                 "--thresholds", str(thresholds), "--out", str(bundle), "--synthetic",
                 "--name", "export-e2e", "--version", "0.0.1"])
    assert code == 0
    return {"models": models, "bundle": bundle, "tmp": tmp}


def _torch_scores(models: dict[str, object], images: dict[str, np.ndarray],
                  clin: dict[str, np.ndarray]) -> dict[str, float]:
    args = [torch.from_numpy(images["arterial"][None]), torch.from_numpy(images["portal"][None]),
            *(torch.from_numpy(clin[k]) for k in ("lab", "demo", "iv"))]
    with torch.no_grad():
        return {m: float(torch.sigmoid(models[m](*args))[0, 0]) for m in MODELS}  # type: ignore[operator]


def test_bundle_from_exports_verifies(exported: dict[str, object]) -> None:
    bundle = load_bundle(exported["bundle"])  # type: ignore[arg-type]
    m = bundle.manifest
    assert m.selection.fused is not None and m.selection.models == {}
    assert m.parity["selection.fused"]["parity"]["passed"] is True
    assert m.parity["segmentation"]["passed"] is True
    assert m.segmentation.spec.configuration == "3d_fullres"
    report = verify_bundle(bundle)
    assert report.ok, report.text()


def test_predictor_scores_match_pytorch_on_the_chain_images(
    exported: dict[str, object]
) -> None:
    ct = read_ct(VOLUME)
    # the two phases must differ (identical pixels are refused): portal 20 HU brighter
    phases = {"arterial": ct, "portal": ct.with_array(ct.array + 20.0)}
    with Predictor.from_bundle(exported["bundle"], device="cpu",  # type: ignore[arg-type]
                               mirroring=False) as p:
        rec = p.recommend(phases, clinical_example())
        spec = p.preprocessing
        images = {}
        for name, phase in phases.items():
            vol = prepare_phase(phase, spec)
            labels = p.segment(phase)
            images[name] = phase_image(vol, labels, spec).image
        sel = p.bundle.manifest.selection
        clin = encode_clinical(ClinicalVariables.from_mapping(clinical_example()),
                               sel.clinical_encoding, sel)
    expected = _torch_scores(exported["models"], images, clin)  # type: ignore[arg-type]
    for m in MODELS:
        assert rec.scores[m].score == pytest.approx(expected[m], abs=1e-5)
    assert rec.decision == decide({m: rec.scores[m].score for m in MODELS},
                                  {"TACE": 0.45, "HAIC": 0.5, "TC": 0.55, "HC": 0.5})
    # the nnU-Net model finds the phantom's liver and tumour
    for name in ("arterial", "portal"):
        ph = rec.phases[name]  # type: ignore[index]
        assert ph.tumour_area_mm2 > 50 and ph.liver_area_mm2 > ph.tumour_area_mm2
    assert rec.bundle.name == "export-e2e" and rec.bundle.synthetic


def test_cli_recommend_on_the_export_bundle(exported: dict[str, object]) -> None:
    tmp = exported["tmp"]
    assert isinstance(tmp, Path)
    ct = read_ct(VOLUME)  # the portal phase 20 HU brighter: identical phases are refused
    portal = write_volume(ct.with_array(ct.array + 20.0), tmp / "portal.nrrd")
    out = tmp / "rec.json"
    code = main(["recommend", "--bundle", str(exported["bundle"]), "--arterial", str(VOLUME),
                 "--portal", str(portal), "--clinical", str(ROOT.parent / "examples" /
                                                            "clinical_example.json"),
                 "--json", str(out), "--device", "cpu", "--no-mirroring"])
    assert code == 0
    rec = Recommendation.from_json(out)
    assert rec.engine.selection_layout == "fused"
    assert set(rec.scores) == set(MODELS)
