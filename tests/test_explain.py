"""Explanations at runtime: Predictor.explain / recommend(explain=True), relevance maps,
overlay geometry, attributions, the typed error, the manifest section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hccatom
from hccatom.atom import MODELS
from hccatom.bundle.explain_spec import ExplainSpec, explain_cohort, reference_values
from hccatom.demo import demo_bundle_path
from hccatom.errors import ExplainUnavailableError
from hccatom.explain import CropGeometry, grid_to_model_image, model_image_to_source


def test_bundle_without_explain_graphs_names_the_flag() -> None:
    from hccatom.demo import demo_case

    ct, clinical, _ = demo_case(0)
    predictor = hccatom.Predictor.from_bundle(demo_bundle_path(), device="cpu")
    with pytest.raises(ExplainUnavailableError, match="--explain"):
        predictor.recommend(ct, clinical, explain=True)  # raised before segmentation


def test_explanation_scores_and_normalisation(explained: Any) -> None:
    exp = explained.explanation
    assert set(exp.models) == set(MODELS)
    for m, me in exp.models.items():
        assert me.score == pytest.approx(explained.scores[m].score, abs=1e-6)
        total = sum(p.share for p in me.phases.values()) + sum(c.relevance for c in me.clinical)
        assert total == pytest.approx(1.0, abs=1e-6)
        assert len(me.clinical) == 20
        for phase in me.phases.values():
            grid = np.asarray(phase.grid)
            assert grid.shape == (7, 7) and (grid >= 0).all()  # demo: 224 px, 32 px patches
            img = phase.on_model_image()
            assert img.shape == (224, 224)
            assert img.sum() == pytest.approx(grid.sum() * 32 * 32)
            src = phase.on_source_slice()
            assert src.shape == phase.geometry.slice_shape
            assert np.isfinite(src).any()
    # JSON round trip keeps the explanation
    back = hccatom.Recommendation.from_json(explained.to_json())
    assert back.explanation == exp


def test_clinical_tokens_named_by_the_encoding(explained: Any) -> None:
    names = [c.variable for c in explained.explanation.models["TACE"].clinical]
    assert names[0] == "albumin_g_per_l" and "afp_ng_per_ml" in names and len(set(names)) == 20


def test_attributions_ranked_and_labelled(explained: Any) -> None:
    exp = explained.explanation
    assert exp.attributions is not None and "40 synthetic records" in exp.attribution_status
    assert "not causal" in exp.sensitivity_note
    for m in MODELS:
        deltas = [abs(a.delta) for a in exp.attributions[m]]
        assert deltas == sorted(deltas, reverse=True) and len(deltas) == 20


def _crop_case() -> tuple[Any, Any, CropGeometry]:
    from hccatom.preprocess import crop_liver_box
    from hccatom.volume import Volume

    lab = np.zeros((1, 90, 120), np.uint8)
    lab[0, 20:70, 30:100] = 1
    ct = Volume.from_array(np.zeros((1, 90, 120), np.float32), (1.0, 0.9, 1.3))
    labels = Volume.from_array(lab, (1.0, 0.9, 1.3))
    crop = crop_liver_box(ct, labels, 0, 100.0, 64, order=0)
    geom = CropGeometry(slice_shape=(90, 120), spacing_yx_mm=(0.9, 1.3),
                        centre_yx_mm=crop.centre_yx_mm, box_mm=crop.box_mm, crop_px=64,
                        model_px=64)
    return ct, labels, geom


def test_relevance_peak_lands_on_the_right_source_pixels() -> None:
    """A peak on patch (2, 5) of an 8 x 8 grid, mapped back to the source slice: marking
    those source pixels and cropping forward again lights up exactly that patch."""
    from hccatom.preprocess import crop_liver_box

    ct, labels, geom = _crop_case()
    grid = np.zeros((8, 8))
    grid[2, 5] = 1.0
    src = model_image_to_source(grid_to_model_image(grid, 64), geom)
    hit = np.nan_to_num(src) > 0.5
    assert hit.any()
    marked = ct.with_array(np.where(hit, 1000.0, 0.0).astype(np.float32)[None])
    crop = crop_liver_box(marked, labels, 0, 100.0, 64, order=0, pad_value=0.0)
    lit = crop.image > 500
    rows, cols = np.nonzero(lit)
    assert rows.min() >= 16 and rows.max() < 24 and cols.min() >= 40 and cols.max() < 48
    assert lit[16:24, 40:48].mean() > 0.5  # most of the patch maps back onto itself
    assert np.isnan(src[:, 0]).all()  # the slice is 156 mm wide, the box 100 mm: NaN off it


def test_geometry_with_resize_centre_crop_round_trips() -> None:
    geom = CropGeometry(slice_shape=(100, 100), spacing_yx_mm=(1.0, 1.0),
                        centre_yx_mm=(50.0, 50.0), box_mm=80.0, crop_px=224, resize_px=256,
                        model_px=224)
    u = np.arange(224, dtype=float)
    mm = (geom.model_to_crop(u) + 0.5) * geom.box_mm / geom.crop_px + 50.0 - 40.0
    np.testing.assert_allclose(geom.source_to_model(mm, 0), u, atol=1e-9)


def _only_afp_graph(path: Path) -> Path:
    """An ONNX model whose score depends only on iv[:, 0] (AFP): sigmoid(0.001 * iv0)."""
    onnx = pytest.importorskip("onnx", reason="the synthetic graph is built with onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((6, 1), np.float32)
    w[0, 0] = 1e-3
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", *shape])
              for n, shape in (("arterial", [3, 224, 224]), ("portal", [3, 224, 224]),
                               ("lab", [8]), ("demo", [6]), ("iv", [6]))]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["iv", "w"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["score"])],
        "only_afp", inputs,
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["b", 1])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_model_depending_on_one_clinical_token_ranks_it_first(tmp_path: Path) -> None:
    from hccatom.bundle import SelectionSpec
    from hccatom.chain import SelectionScorer
    from hccatom.clinical_encoding import ClinicalEncoding
    from hccatom.engines import OnnxRuntimeEngine
    from hccatom.explain.attributions import attribute, batch_feeds
    from hccatom.synthetic import draw_cohort

    graph = _only_afp_graph(tmp_path / "afp.onnx")
    enc = ClinicalEncoding.raw_values()
    spec = SelectionSpec(clinical_encoding=enc, models={m: {"path": "x.onnx"} for m in MODELS})
    engine = OnnxRuntimeEngine(graph, device="cpu")
    scorer = SelectionScorer(spec, {m: engine for m in MODELS})
    patients = [p.clinical for p in draw_cohort("HAIC", 30, seed=2).patients]
    reference = reference_values(patients)
    patient = patients[0].model_copy(update={"afp_ng_per_ml": reference["afp_ng_per_ml"] + 300.0})
    image = np.zeros((3, 224, 224), np.float32)
    names = {k: k for k in ("arterial", "portal", "lab", "demo", "iv")}

    def score_rows(rows: list[Any]) -> list[dict[str, float]]:
        return scorer.score(batch_feeds(image, image, rows, enc, names))

    base = score_rows([patient])[0]
    for level in ("variables", "groups"):
        ranked = attribute(patient, reference, enc, base, score_rows, level)
        for m in MODELS:
            first = ranked[m][0]
            assert first.variable == ("afp_ng_per_ml" if level == "variables" else "iv")
            assert first.delta > 0 and "towards low risk" in first.text()
            assert all(a.delta == 0.0 for a in ranked[m][1:])
        if level == "groups":
            assert [a.variable for a in ranked["TACE"]][1:] in (["lab", "demo"],
                                                                  ["demo", "lab"])
            assert "afp_ng_per_ml" in ranked["TACE"][0].variables


def test_manifest_explain_section_is_optional_and_round_trips() -> None:
    from hccatom.bundle import load_bundle

    with load_bundle(demo_bundle_path()) as b:
        sel = b.manifest.selection
        assert sel.explain is None and "explain" not in sel.model_dump_json()
        with_explain = sel.model_copy(update={"explain": ExplainSpec(
            graphs={"TACE": "selection/TACE/selection_tace.explain.onnx"},
            clinical_reference={"sex": "male", "afp_ng_per_ml": 20.0})})
        back = type(sel).model_validate_json(with_explain.model_dump_json())
        assert back.explain == with_explain.explain
    with pytest.raises(ValueError, match="unknown variables"):
        ExplainSpec(clinical_reference={"afp": 1.0})
    assert explain_cohort("selection_hc.explain.parity.json") == "HC"
    assert explain_cohort("selection_hc.onnx") is None


def test_manifest_refuses_an_unlisted_explain_graph() -> None:
    from hccatom.bundle import Manifest, load_bundle

    with load_bundle(demo_bundle_path()) as b:
        data = b.manifest.model_dump(mode="json", by_alias=True)
    data["selection"]["explain"] = {"graphs": {"TACE": "selection/TACE/evil.explain.onnx"}}
    with pytest.raises(ValueError, match="not listed"):
        Manifest.model_validate(data)
