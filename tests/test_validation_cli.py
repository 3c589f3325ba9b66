"""``hccatom validate`` end to end: tables, plots, HTML (checked in headless chromium), demo."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hccatom.atom import MODELS
from hccatom.cli import main

pytest.importorskip("lifelines", reason="hccatom validate needs the validate extra (lifelines)")
pytest.importorskip("matplotlib", reason="hccatom validate needs the validate extra (matplotlib)")

TREATMENTS = ["TACE", "HAIC", "TACE + systemic", "HAIC + systemic"]


def _scores_table(path: Path, n_per: int = 12, seed: int = 0) -> Path:
    """A cohort with precomputed scores (no CT needed) around the demo bundle's thresholds,
    so both risk groups are populated; outcomes follow the scores."""
    from hccatom.demo import demo_bundle_path

    thr = json.loads((demo_bundle_path() / "manifest.json").read_text())["thresholds"]
    rng = np.random.default_rng(seed)
    rows = []
    for ti, t in enumerate(TREATMENTS):
        for k in range(n_per):
            y = k % 2
            s = {m: float(np.clip(thr[m] + rng.normal(0.03 if y else -0.03, 0.03), 1e-3,
                                  0.999)) for m in MODELS}
            months = float(rng.uniform(13, 30) if y else rng.uniform(1, 11))
            rows.append({
                "case_id": f"s-{ti}-{k}", "treatment": t,
                "response": y if t in ("TACE", "HAIC") else "",
                "os_months": round(months, 1), "os_event": 0 if y else 1,
                "set": ("train", "internal", "external")[k % 3],
                **{f"score_{m}": round(v, 4) for m, v in s.items()},
            })
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hccatom.demo import demo_bundle_path

    tmp = tmp_path_factory.mktemp("validate")
    table = _scores_table(tmp / "cohort.csv")
    out = tmp / "out"
    code = main(["validate", str(table), "--bundle", str(demo_bundle_path()), "--out", str(out),
                 "--calibrate-thresholds", str(tmp / "calibrated"), "-q"])
    assert code == 0
    return out


def test_outputs_written(report_dir: Path) -> None:
    for name in ("table2_auc", "fig3c_mann_whitney", "fig4_survival", "table3_concordance",
                 "scores", "failed_cases"):
        assert (report_dir / "tables" / f"{name}.csv").is_file()
        assert isinstance(json.loads((report_dir / "tables" / f"{name}.json").read_text()), list)
    t2 = json.loads((report_dir / "tables" / "table2_auc.json").read_text())
    assert {r["model"] for r in t2} == set(MODELS)
    assert {r["set"] for r in t2} >= {"train", "internal", "external", "all sets"}
    t3 = json.loads((report_dir / "tables" / "table3_concordance.json").read_text())
    assert {r["policy"] for r in t3} == {"atom-v1", "atom-v1-responder"}
    for m in MODELS:
        for kind in ("roc", "km", "scores"):
            assert (report_dir / "plots" / f"{kind}_{m}.png").stat().st_size > 5_000
    html = (report_dir / "report.html").read_text()
    assert "Not the paper's results" in html and "0.761 (0.693, 0.820)" in html
    assert "30/89 (33.7 %)" in html  # the paper's Table 3 beside ours
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["calibration"]["n_train"] == dict.fromkeys(MODELS, 4)


def test_bad_cohort_exit_code_lists_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("case_id,treatment,response\na,TACE,3\nb,radiotherapy,1\n", encoding="utf-8")
    code = main(["validate", str(p), "--bundle", "unused", "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert "line 2, response" in err and "line 3, treatment" in err


def test_missing_cohort_or_bundle_is_bad_input(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "give a cohort table" in capsys.readouterr().err
    table = _scores_table(tmp_path / "c.csv", n_per=2)
    assert main(["validate", str(table), "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "--bundle" in capsys.readouterr().err


def test_report_renders_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    # a copy of the report that records, once loaded, whether every image decoded
    probe = report_dir / "_probe.html"
    probe.write_text((report_dir / "report.html").read_text().replace(
        "</body>", "<script>window.addEventListener('load',()=>{const im=[...document.images];"
        "document.body.setAttribute('data-images',im.length+':'+im.filter("
        "i=>i.complete&&i.naturalWidth>0).length);});</script></body>"), encoding="utf-8")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--allow-file-access-from-files"]
    try:
        dom = subprocess.run([browser, *flags, "--dump-dom", probe.as_uri()],
                             capture_output=True, text=True, timeout=90, check=True).stdout
        shot = tmp_path / "report.png"
        subprocess.run([browser, *flags, "--window-size=1280,2400", f"--screenshot={shot}",
                        (report_dir / "report.html").as_uri()], capture_output=True,
                       timeout=90, check=True)
    finally:
        probe.unlink()
    assert 'data-images="12:12"' in dom  # 4 models x (ROC, KM, scores), all decoded
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1200
    # the red notice box and plot colours are on the page, not just a blank render
    rgb = (img[..., :3] * 255).astype(int)
    assert np.any((rgb[..., 0] > 180) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60))
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 200


@pytest.mark.slow
def test_demo_small_and_resumable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = ["validate", "--demo", "--demo-per-cohort", "1", "--workers", "2", "--out", str(out),
            "--no-plots", "-q"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "4 of 4 cases scored (0 from cache), 0 failed" in first
    assert len(list((out / "cases").glob("*.json"))) == 4
    assert (out / "report.html").is_file()
    assert main(args) == 0  # rerun: every case from the cache
    assert "4 of 4 cases scored (4 from cache)" in capsys.readouterr().out


@pytest.mark.slow
def test_compare_bundle_same_bundle_same_scores(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """One synthetic case scored by the bundle and by the "second" bundle (the same one):
    the comparison columns must equal the scores."""
    from hccatom.demo import demo_bundle_path
    from hccatom.validation.demo_cohort import write_demo_cohort

    table = write_demo_cohort(tmp_path / "c", 1)
    lines = table.read_text().splitlines()
    one = tmp_path / "c" / "one.csv"
    one.write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    bundle = str(demo_bundle_path())
    assert main(["validate", str(one), "--bundle", bundle, "--compare-bundle", bundle,
                 "--out", str(out), "--no-plots", "-q"]) == 0
    assert "1 of 1 cases scored (0 from cache), 0 failed" in capsys.readouterr().out
    (row,) = json.loads((out / "tables" / "scores.json").read_text())
    for m in MODELS:
        assert row[f"compare_{m}"] == pytest.approx(row[f"score_{m}"], abs=1e-6)
    assert len(list((out / "compare" / "cases").glob("*.json"))) == 1
