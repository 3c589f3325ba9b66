"""The visual report renders: the demo (with explanations), a flagged case, no tumour on
the key slice, and a recommendation read back from JSON (no images)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the report needs the report extra (matplotlib)")

from hccatom.recommendation import QualityFlag, Recommendation


def _png_pixels(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return np.asarray(imread(str(path)))


def _is_a4_page(pixels: np.ndarray) -> None:
    h, w = pixels.shape[:2]
    assert h / w == pytest.approx(11.69 / 8.27, rel=0.01)
    assert pixels[..., :3].std() > 0.05  # not blank


def test_demo_report_pdf_renders_to_png(explained: Any, tmp_path: Path) -> None:
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    pdf = explained.report(tmp_path / "report.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    subprocess.run(["pdftoppm", "-png", "-r", "60", "-singlefile", str(pdf),
                    str(tmp_path / "page")], check=True, timeout=60)
    _is_a4_page(_png_pixels(tmp_path / "page.png"))


def test_demo_report_png_has_overlays_and_text(explained: Any, tmp_path: Path) -> None:
    from hccatom.report import render_figure

    fig = render_figure(explained)
    text = " ".join(t.get_text() for t in fig.texts)
    for needle in ("RESEARCH USE ONLY", "SYNTHETIC MODELS", explained.bundle.sha256[:16],
                   explained.final_plan, "not causal", explained.hccatom_version):
        assert needle in text
    titles = [ax.get_title() for ax in fig.axes]
    assert sum(t.startswith(("TACE ", "HAIC ", "TC ", "HC ")) for t in titles) == 8
    out = explained.report(tmp_path / "report.png")
    _is_a4_page(_png_pixels(out))


def test_report_of_a_flagged_case(explained: Any, tmp_path: Path) -> None:
    flags = [*explained.quality_flags, QualityFlag(
        code="liver_touches_border", phase="arterial", severity="warning",
        message="arterial: the liver reaches the image border on slice 3; it may be cut off.")]
    rec = explained.model_copy(update={"quality_flags": flags})
    from hccatom.report import render_figure

    text = " ".join(t.get_text() for ax in render_figure(rec).axes for t in ax.texts)
    assert "reaches the image border" in text
    assert rec.report(tmp_path / "flagged.png").stat().st_size > 10_000


def test_report_without_tumour_or_images(explained: Any, tmp_path: Path) -> None:
    from dataclasses import replace

    from hccatom.explain import visual

    rec = explained.model_copy()
    assert visual.key_slices(rec) == {}  # kept beside the object, not copied with it
    no_tumour = {name: replace(ks, labels=np.where(ks.labels == ks.tumour_label,
                                                   ks.liver_label, ks.labels))
                 for name, ks in visual.key_slices(explained).items()}
    assert len(no_tumour) == 2
    visual._keep(rec, no_tumour)
    assert rec.report(tmp_path / "no_tumour.png").is_file()
    bare = Recommendation.from_json(explained.to_json())  # no images, explanation kept
    from hccatom.report import render_figure

    text = " ".join(t.get_text() for ax in render_figure(bare).axes for t in ax.texts)
    assert "key slice not available" in text.replace("\n", " ")
    assert bare.report(tmp_path / "bare.pdf").is_file()


def test_report_refuses_other_formats(explained: Any, tmp_path: Path) -> None:
    from hccatom.errors import InputError

    with pytest.raises(InputError, match=r"\.pdf or \.png"):
        explained.report(tmp_path / "report.jpg")


def test_cli_recommend_writes_the_report(explain_bundle: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from hccatom.cli import main
    from hccatom.ct_io import write_volume
    from hccatom.demo import demo_case

    ct, clinical, _ = demo_case(0)
    art = write_volume(ct["arterial"], tmp_path / "art.nii.gz")
    por = write_volume(ct["portal"], tmp_path / "por.nii.gz")
    cj = tmp_path / "clinical.json"
    cj.write_text(json.dumps(clinical.model_dump(mode="json")))
    base = ["recommend", "--bundle", str(explain_bundle), "--arterial", str(art),
            "--portal", str(por), "--clinical", str(cj), "--device", "cpu"]
    assert main([*base, "--report", str(tmp_path / "r.jpg")]) == 2  # refused before running
    out = tmp_path / "r.png"
    assert main([*base, "--report", str(out), "--json", str(tmp_path / "r.json")]) == 0
    assert out.stat().st_size > 10_000
    assert f"report written to {out}" in capsys.readouterr().out
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["explanation"]["attributions"] is not None  # explain ran for the report


def test_cli_explain_mode(explain_bundle: Path, tmp_path: Path) -> None:
    """`--explain groups`: per-group attributions in the JSON; the CLI's choices are the
    runtime's modes."""
    import argparse
    import json

    from hccatom.cli import build_parser, main
    from hccatom.ct_io import write_volume
    from hccatom.demo import demo_case
    from hccatom.explain.runner import EXPLAIN_MODES

    ct, clinical, _ = demo_case(0)
    art = write_volume(ct["arterial"], tmp_path / "art.nii.gz")
    por = write_volume(ct["portal"], tmp_path / "por.nii.gz")
    cj = tmp_path / "clinical.json"
    cj.write_text(json.dumps(clinical.model_dump(mode="json")))
    assert main(["recommend", "--bundle", str(explain_bundle), "--arterial", str(art),
                 "--portal", str(por), "--clinical", str(cj), "--device", "cpu",
                 "--explain", "groups", "--json", str(tmp_path / "r.json")]) == 0
    saved = json.loads((tmp_path / "r.json").read_text())["explanation"]
    assert saved["attribution_level"] == "groups"
    assert sorted(a["variable"] for a in saved["attributions"]["TACE"]) == ["demo", "iv", "lab"]
    recommend = next(a for a in build_parser()._actions
                     if isinstance(a, argparse._SubParsersAction)).choices["recommend"]
    option = next(a for a in recommend._actions if "--explain" in a.option_strings)
    assert tuple(option.choices or ()) == EXPLAIN_MODES
