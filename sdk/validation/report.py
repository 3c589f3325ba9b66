"""The output folder: tables (CSV + JSON), plots, and one HTML report.

Layout::

    OUT/tables/<name>.csv, <name>.json   Table 2 (AUC), Fig. 3c (Mann-Whitney), Fig. 4
                                         (survival), Table 3 (concordance, both policies),
                                         scores (per case), failed_cases
    OUT/plots/roc_<MODEL>.png, km_<MODEL>.png, scores_<MODEL>.png
    OUT/report.html                      our numbers beside the paper's (relative image links)
    OUT/summary.json                     everything above in one file, plus notes
    OUT/cases/                           the scoring cache (resumable runs)
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hccatom.atom import MODELS
from hccatom.validation import paper_reference as paper
from hccatom.validation.analyses import ALL_SETS, ValidationResults, outcome_of
from hccatom.validation.calibrate import Calibration
from hccatom.validation.scoring import ScoringResult


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def write_table(rows: Sequence[dict[str, Any]], folder: Path, name: str) -> None:
    """``name.csv`` and ``name.json`` (an empty table still gets its files)."""
    rows = [{k: _clean(v) for k, v in r.items()} for r in rows]
    (folder / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with (folder / f"{name}.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
    return html.escape(str(v))


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _table2_html(res: ValidationResults) -> str:
    rows = []
    for r in res.table2:
        ref = paper.TABLE2_SELECTION.get(r["model"], {}).get(r["set"])
        rows.append([
            r["model"], r["set"], str(r["n"]),
            f"{_fmt(r['auc'])} ({_fmt(r['auc_ci_low'])}, {_fmt(r['auc_ci_high'])})",
            _fmt(r["accuracy"]), _fmt(r["sensitivity"]), _fmt(r["specificity"]),
            _fmt(r["ppv"]), _fmt(r["npv"]),
            "-" if r["delong_p"] is None else f"{_fmt(r['compare_auc'])} (P {_fmt(r['delong_p'])})",
            "-" if ref is None else
            f'<span class="paper">{ref[0]}: {ref[1]:.3f} ({ref[2]:.3f}, {ref[3]:.3f}); '
            f"SENS {ref[6]:.3f} SPEC {ref[7]:.3f} PPV {ref[5]:.3f} NPV {ref[4]:.3f}</span>",
        ])
    return _table(["model", "set", "n", "AUC (95 % CI, DeLong)", "ACC", "SENS", "SPEC", "PPV",
                   "NPV", "other model AUC (DeLong P)", "paper: n, AUC (CI), metrics"], rows)


def _table3_html(res: ValidationResults) -> str:
    rows = []
    for r in res.table3:
        ref = paper.TABLE3.get(r["model"])

        def frac(e: int, n: int) -> str:
            return f"{e}/{n} ({100 * e / n:.1f} %)" if n else "0/0"

        rows.append([
            r["policy"], r["model"], str(r["stage"]), r["set"],
            frac(r["consistent_events"], r["consistent_n"]),
            frac(r["inconsistent_events"], r["inconsistent_n"]),
            _fmt(r["p_consistent_vs_inconsistent"]),
            frac(r["against_events"], r["against_n"]), _fmt(r["p_consistent_vs_against"]),
            frac(r["total_events"], r["total_n"]),
            "-" if ref is None else
            f'<span class="paper">{frac(*ref[0])}; {frac(*ref[1])} P {ref[2]}; '
            f"{frac(*ref[3])} P {ref[4]}; {frac(*ref[5])}</span>",
        ])
    return _table(["policy", "cohort", "stage", "set", "consistent", "inconsistent", "P",
                   "ATOM against", "P", "total", "paper (external): consistent; inconsistent; "
                   "against; total"], rows)


def _survival_html(res: ValidationResults) -> str:
    rows = []
    for r in res.survival:
        ref = paper.HAZARD_RATIO.get(r["model"])
        rows.append([
            r["model"], str(r["n"]), f"{r['n_low_risk']} / {r['n_high_risk']}",
            _fmt(r["logrank_p"]),
            f"{_fmt(r['hazard_ratio'], 2)} ({_fmt(r['hr_ci_low'], 2)}, {_fmt(r['hr_ci_high'], 2)})"
            + ("" if r.get("hr_reliable", True) else " <b>unreliable</b>"),
            '<span class="paper">log-rank P &lt; 0.001'
            + (f"; HR {ref[0]} ({ref[1]}, {ref[2]})" if ref else "") + "</span>",
        ])
    return _table(["model", "n", "low / high risk", "log-rank P", "HR high vs low (95 % CI)",
                   "paper"], rows)


def _mw_html(res: ValidationResults) -> str:
    rows = [[r["model"], f"{r['set_a']} vs {r['set_b']}", f"{r['n_a']} / {r['n_b']}",
             f"{_fmt(r['median_a'])} / {_fmt(r['median_b'])}", _fmt(r["p_value"])]
            for r in res.mann_whitney]
    return _table(["model", "sets", "n", "median score", "Mann-Whitney P"], rows)


CSS = """body{font-family:sans-serif;max-width:1200px;margin:1em auto;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}
td,th{border:1px solid #bbb;padding:3px 6px;text-align:left}th{background:#eee}
.paper{color:#555;font-style:italic}.notice{border:2px solid #c00;padding:0.6em;background:#fee}
.figs img{max-width:32%;margin:2px;border:1px solid #ddd}"""


def write_html(res: ValidationResults, out: Path, plots: list[str], *, title: str,
               meta: dict[str, Any], failed: list[dict[str, Any]],
               calibration: Calibration | None) -> Path:
    """``report.html``: our tables beside the paper's numbers, the plots, notes, failures."""
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>",
             f'<p class="notice" id="notice"><b>Not the paper\'s results.</b> '
             f"{esc(paper.NOTICE)} Research use only; not a medical device.</p>",
             "<ul>" + "".join(f"<li>{esc(k)}: {esc(str(v))}</li>" for k, v in meta.items())
             + "</ul>",
             "<h2>Table 2: AUC and threshold metrics at the bundle's MSS</h2>",
             _table2_html(res),
             "<h2>Fig. 4: overall survival of the risk groups</h2>", _survival_html(res),
             "<h2>Fig. 3c: score distributions between sets</h2>", _mw_html(res),
             "<h2>Table 3: outcome by agreement of the actual treatment with ATOM</h2>",
             "<p>Under both ATOM policies the atom package offers; Fisher's exact test.</p>",
             _table3_html(res)]
    if calibration is not None:
        parts.append("<h2>Threshold calibration</h2>" + _table(
            ["model", "previous MSS", "new MSS (median train score)", "n train"],
            [[m, f"{calibration.previous_thresholds[m]:.4f}",
              f"{calibration.thresholds[m]:.4f}", str(calibration.n_train[m])]
             for m in MODELS]) + f"<p>{esc(calibration.provenance_note())}</p>")
    parts.append('<h2>Figures</h2><div class="figs">' + "".join(
        f'<img src="{esc(p)}" alt="{esc(Path(p).stem)}">' for p in plots) + "</div>")
    parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in res.notes)
                 + "</ul>")
    parts.append(f"<h2>Failed cases ({len(failed)})</h2>" + (_table(
        ["line", "case", "error", "message"],
        [[str(f["line"]), esc(f["case_id"]), esc(f["error_type"]), esc(f["message"])]
         for f in failed]) if failed else "<p>none</p>"))
    parts.append("</body></html>")
    path = out / "report.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def write_outputs(res: ValidationResults, scoring: ScoringResult, out: Path, *, title: str,
                  meta: dict[str, Any], calibration: Calibration | None = None,
                  make_plots: bool = True) -> Path:
    """Write every table, plot and the HTML report under ``out``; returns report.html."""
    tables, plot_dir = out / "tables", out / "plots"
    tables.mkdir(parents=True, exist_ok=True)
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in res.tables().items():
        write_table(rows, tables, name)
    write_table([{"line": s.case.line, "case_id": s.case.case_id, "treatment": s.case.treatment,
                  "set": s.case.set, "source": s.source,
                  **{f"score_{m}": s.scores[m] for m in MODELS},
                  **{f"compare_{m}": v for m, v in s.case.compare.items()}}
                 for s in scoring.scored], tables, "scores")
    failed = [{"line": f.case.line, "case_id": f.case.case_id, "error_type": f.error_type,
               "message": f.message} for f in scoring.failed]
    write_table(failed, tables, "failed_cases")
    plots: list[str] = []
    if make_plots:
        from hccatom.validation.plots import plot_distributions, plot_km, plot_roc

        for m in MODELS:
            cases = [s for s in scoring.scored if s.case.model == m]
            if m in res.roc:
                arrays = {}
                for set_name in res.roc[m]:
                    lab = [(s.scores[m], y) for s in cases
                           if set_name in (ALL_SETS, s.case.set or "unlabelled")
                           and (y := outcome_of(m, s)) is not None]
                    arrays[set_name] = (np.array([a for a, _ in lab]),
                                        np.array([b for _, b in lab], int))
                plot_roc(res, m, arrays, plot_dir / f"roc_{m}.png")
                plots.append(f"plots/roc_{m}.png")
            if m in res.km:
                plot_km(res, m, plot_dir / f"km_{m}.png")
                plots.append(f"plots/km_{m}.png")
            if m in res.distributions:
                plot_distributions(res, m, plot_dir / f"scores_{m}.png")
                plots.append(f"plots/scores_{m}.png")
    summary = {"meta": meta, "thresholds": res.thresholds, "notes": res.notes,
               "failed_cases": failed, **{k: [{kk: _clean(vv) for kk, vv in r.items()}
                                               for r in v] for k, v in res.tables().items()},
               "calibration": None if calibration is None else calibration.__dict__,
               "paper_notice": paper.NOTICE}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return write_html(res, out, plots, title=title, meta=meta, failed=failed,
                      calibration=calibration)


__all__ = ["write_html", "write_outputs", "write_table"]
