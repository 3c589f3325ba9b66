"""Build a bundle from export folders: ``hccatom bundle build``.

Inputs are what the exporters write:

* the segmentation export folder (``hccatom export nnunet``): ``segmentation_spec.json``,
  one ONNX file per fold, optionally a parity report;
* one SELECTION export folder per cohort (``hccatom export selection``) holding one
  ``.onnx`` file and its parity report (``*parity*.json``), and/or a folder with the fused
  four-score graph.

The writer copies them into the bundle layout (``segmentation/``, ``selection/<COHORT>/``,
``selection/fused/``), records every file's sha256 and size, embeds the specs, thresholds,
policy and parity reports in ``manifest.json``, and then verifies the result with the
runtime's own reader and :func:`hccatom.bundle.verify_bundle` (every model run once), so a
bundle that leaves this function loads. Given a private key it signs the manifest
(:mod:`hccatom.bundle.signer`). Output: a directory, or a ``.zip`` of one.

Runtime code (no torch): it lives in :mod:`hccatom.bundle` so ``hccatom bundle build`` works
in a runtime-only install; :mod:`hccatom.export.bundle_writer` re-exports it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hccatom import __version__
from hccatom.atom import MODELS, AtomPolicy
from hccatom.bundle import (
    MANIFEST_NAME,
    RESEARCH_USE_ONLY,
    SCHEMA_VERSION,
    FileEntry,
    Manifest,
    Provenance,
    SegmentationSection,
    SelectionModel,
    SelectionSpec,
    load_bundle,
    sha256_file,
    verify_bundle,
)
from hccatom.bundle.explain_spec import ExplainSpec, ReferenceValue, explain_cohort
from hccatom.bundle.specs import (
    ClinicalEncoding,
    PreprocessSpec,
    SafetyLimits,
    SegmentationSpec,
)
from hccatom.engines import OnnxRuntimeEngine
from hccatom.errors import BundleError, ExportError, HccatomError, ParityError
from hccatom.path_checks import check_output_file, check_output_folder
from hccatom.safe_json import JSONLimitError, JSONLimits, load_limited

log = logging.getLogger(__name__)

SEGMENTATION_DIR = "segmentation"
SELECTION_DIR = "selection"


def _files(folder: Path) -> list[Path]:
    """Regular, non-hidden files under ``folder``, sorted."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


#: Parity reports and threshold files: a few kB each; they end up in the manifest.
INPUT_JSON_LIMITS = JSONLimits(max_bytes=4 << 20, max_depth=32, max_number_chars=40)


def _load_json(path: Path) -> Any:
    try:
        return load_limited(path, INPUT_JSON_LIMITS)
    except (OSError, JSONLimitError) as exc:
        raise ExportError(f"{path}: cannot use it as JSON ({exc}).") from None


def _parity_failed(report: Any) -> bool:
    """True when a parity report (top level or its ``parity`` section) says it failed."""
    if not isinstance(report, dict):
        return False
    sections = [report]
    if isinstance(report.get("parity"), dict):
        sections.append(report["parity"])
    return any(sec.get(key) is False for sec in sections for key in ("passed", "ok"))


def _is_explain(path: Path) -> bool:
    """An explain graph or its report (``*.explain.onnx``, ``*.explain.parity.json``)."""
    return explain_cohort(path.name) is not None


def _is_fp16(path: Path) -> bool:
    """An fp16 twin graph or its gate report (``*.fp16.onnx``, ``*.fp16.parity.json``)."""
    return ".fp16." in path.name.lower()


def find_selection_export(folder: Path) -> tuple[Path, Path | None]:
    """The one ``.onnx`` file of a SELECTION export folder and its parity report (if any)."""
    if not folder.is_dir():
        raise ExportError(f"{folder}: not a folder; give an `hccatom export selection` output.")
    onnx = sorted(p for p in folder.glob("*.onnx") if not _is_fp16(p) and not _is_explain(p))
    if len(onnx) != 1:
        raise ExportError(
            f"{folder}: expected exactly one .onnx file, found {[p.name for p in onnx]}; give "
            "one `hccatom export selection` output folder per model."
        )
    parity = sorted(p for p in folder.glob("*.json")
                    if "parity" in p.name.lower() and not _is_fp16(p) and not _is_explain(p))
    if len(parity) > 1:
        raise ExportError(f"{folder}: several parity reports {[p.name for p in parity]}.")
    return onnx[0], (parity[0] if parity else None)


def parse_thresholds(text: str) -> dict[str, float]:
    """``TACE=0.4,HAIC=0.3,...`` or a JSON file path -> thresholds mapping."""
    path = Path(text)
    if path.suffix == ".json" or path.is_file():
        data = _load_json(path)
        if not isinstance(data, dict):
            raise ExportError(f"{path}: thresholds JSON must be an object like {{\"TACE\": 0.4}}")
        return {str(k): float(v) for k, v in data.items()}
    out: dict[str, float] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ExportError(f"thresholds: expected MODEL=VALUE, got {part!r}")
        try:
            out[key.strip()] = float(value)
        except ValueError as exc:
            raise ExportError(f"thresholds: {value!r} is not a number") from exc
    return out


class _Staging:
    """Collects files into the bundle folder and their manifest entries."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: list[FileEntry] = []

    def add(self, src: Path, rel: str, role: str) -> str:
        dest = self.root.joinpath(*rel.split("/"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        self.entries.append(
            FileEntry(path=rel, sha256=sha256_file(dest), size_bytes=dest.stat().st_size,
                      role=role)
        )
        return rel


def _stage_segmentation(stage: _Staging, folder: Path, parity: dict[str, Any]) -> SegmentationSpec:
    if not folder.is_dir():
        raise ExportError(
            f"{folder}: not a folder; give an `hccatom export nnunet` output folder."
        )
    try:
        spec = SegmentationSpec.load(folder)
    except BundleError as exc:
        raise ExportError(str(exc)) from exc
    folds = spec.all_folds()  # every stage and ensemble member
    fold_files = {f.onnx for f in folds} | {f.onnx_fp16 for f in folds if f.onnx_fp16}
    for src in _files(folder):
        rel = src.relative_to(folder).as_posix()
        if rel in fold_files:
            role = "segmentation"
        elif src.suffix == ".json" and "parity" in src.name.lower():
            role = "segmentation.parity"
            report = _load_json(src)
            if _parity_failed(report):
                raise ParityError(f"{src}: the segmentation export failed its parity check.")
            parity["segmentation" if "/" not in rel else f"segmentation/{rel}"] = report
        elif src.suffix == ".onnx":
            raise ExportError(
                f"{src}: an ONNX file that the segmentation spec does not list as a fold; "
                "remove it or re-export."
            )
        elif src.name == "segmentation_spec.json":
            role = "segmentation.spec"
        else:
            role = "segmentation.file"
        stage.add(src, f"{SEGMENTATION_DIR}/{rel}", role)
    missing = sorted(fold_files - {p.relative_to(folder).as_posix() for p in _files(folder)})
    if missing:
        raise ExportError(f"{folder}: fold file(s) {missing} named by the spec are missing.")
    return spec


def _stage_selection(
    stage: _Staging, key: str, folder: Path, parity: dict[str, Any]
) -> SelectionModel:
    """Copy one SELECTION export folder (model, external data, parity report) into place."""
    onnx, report_path = find_selection_export(folder)
    base = f"{SELECTION_DIR}/{key}"
    rel = parity_rel = rel16 = parity16 = None
    for src in _files(folder):
        name = src.relative_to(folder).as_posix()
        if src == onnx:
            rel = stage.add(src, f"{base}/{name}", f"selection.{key}")
        elif _is_explain(src):  # explain twin(s): role selection.explain.<COHORT>
            kind = "selection" if src.suffix == ".onnx" else "parity"
            stage.add(src, f"{base}/{name}", f"{kind}.explain.{explain_cohort(src.name)}")
        elif _is_fp16(src) and src.suffix == ".onnx":
            rel16 = stage.add(src, f"{base}/{name}", f"selection.{key}.fp16")
        elif _is_fp16(src) and src.suffix == ".json":
            report = _load_json(src)
            if _parity_failed(report):
                raise ParityError(f"{src}: the {key} fp16 graph failed its parity gate.")
            parity[f"selection.{key}.fp16"] = report
            parity16 = stage.add(src, f"{base}/{name}", f"parity.{key}.fp16")
        elif src == report_path:
            report = _load_json(src)
            if _parity_failed(report):
                raise ParityError(f"{src}: the {key} export failed its parity check.")
            parity[f"selection.{key}"] = report
            parity_rel = stage.add(src, f"{base}/{name}", f"parity.{key}")
        else:  # e.g. the model's external data file
            stage.add(src, f"{base}/{name}", f"selection.{key}.file")
    if report_path is None:
        log.warning("%s: no parity report found; the bundle records none for %s", folder, key)
    assert rel is not None
    if rel16 is not None and parity16 is None:
        raise ParityError(f"{folder}: an fp16 graph without its parity gate report; re-export.")
    return SelectionModel(path=rel, parity=parity_rel, path_fp16=rel16, parity_fp16=parity16)


def _check_image_size(model: Path, size_px: int) -> None:
    """Refuse early, with the fix, when a model's image input disagrees with preprocessing."""
    engine = OnnxRuntimeEngine(model, device="cpu")
    for spec in engine.inputs:
        dims = [d for d in spec.shape[2:] if isinstance(d, int)]
        if spec.rank == 4 and dims and any(d != size_px for d in dims):
            raise ExportError(
                f"{model.name}: input {spec.name!r} is {spec.describe()} but the preprocessing "
                f"spec makes {size_px} px images; pass --preprocessing FILE.json with "
                f"image_size_px = {dims[0]} (the image size belongs to the trained model)."
            )


def check_bundle_output(out: str | Path, what: str, *,
                        error: type[HccatomError] = ExportError) -> Path:
    """``out`` as a Path when a bundle can be written there: a ``.zip`` name is a file output
    (:func:`hccatom.path_checks.check_output_file`: its folder exists and is writable, it is
    no folder, FIFO or device), anything else a folder output (``check_output_folder``).
    Cheap ``stat`` calls: callers run it before the slow work (export, training, verify)."""
    p = Path(out)
    if p.suffix.lower() == ".zip":
        return check_output_file(p, what, error=error)
    return check_output_folder(p, what, error=error)


def build_bundle(
    out: str | Path,
    *,
    segmentation: str | Path,
    selection: Mapping[str, str | Path] | None = None,
    fused: str | Path | None = None,
    name: str,
    version: str,
    thresholds: Mapping[str, float],
    policy: AtomPolicy | None = None,
    preprocessing: PreprocessSpec | None = None,
    clinical_encoding: ClinicalEncoding | None = None,
    provenance: Provenance | None = None,
    intended_use: str = RESEARCH_USE_ONLY,
    synthetic: bool = False,
    sign_key: str | Path | bytes | None = None,
    sign_label: str | None = None,
    created_at: datetime | None = None,
    overwrite: bool = False,
    verify: bool = True,
    safety: SafetyLimits | None = None,
    clinical_reference: Mapping[str, ReferenceValue] | None = None,
    reference_source: str = "",
) -> Path:
    """Assemble, write and verify a bundle; returns ``out`` (a folder, or a ``.zip``).

    ``sign_key``: an Ed25519 private key (PEM path or bytes) to sign the manifest with;
    ``sign_label`` names the key in the signature file.
    ``selection`` maps each of TACE, HAIC, TC, HC to its export folder; ``fused`` is the
    folder of the fused four-score graph. Give all four, the fused one, or both.
    Raises :class:`ExportError` (bad inputs), :class:`ParityError` (an export failed its
    parity check) or the reader's :class:`BundleError` if the result does not verify.
    ``safety``: the limits and training-cohort ranges behind the quality flags
    (``docs/safety.md``); None leaves the runtime defaults in force.
    Explain graphs found in the SELECTION folders (``--explain`` exports) and
    ``clinical_reference`` (variable -> reference value, see
    :func:`hccatom.bundle.explain_spec.reference_values`) go into ``selection.explain``.
    """
    out_path = check_bundle_output(out, "bundle output")  # before the copies and the verify
    as_zip = out_path.suffix.lower() == ".zip"
    if out_path.exists() and not overwrite:
        raise ExportError(f"{out_path} exists; choose another --out or pass --overwrite.")
    sel_dirs = {str(k): Path(v) for k, v in (selection or {}).items()}
    unknown = sorted(set(sel_dirs) - set(MODELS))
    if unknown:
        raise ExportError(f"unknown SELECTION model(s) {unknown}; use {', '.join(MODELS)}.")
    if fused is None and set(sel_dirs) != set(MODELS):
        missing = [m for m in MODELS if m not in sel_dirs]
        raise ExportError(
            f"SELECTION model(s) missing: {missing}; give all four (--selection TACE=DIR ...) "
            "or a fused model (--fused DIR)."
        )
    pre = preprocessing if preprocessing is not None else PreprocessSpec.model_validate({})
    enc = clinical_encoding if clinical_encoding is not None else ClinicalEncoding.raw_values()
    tmp = Path(tempfile.mkdtemp(prefix="hccatom-build-"))
    try:
        root = tmp / "bundle"
        root.mkdir()
        stage = _Staging(root)
        parity: dict[str, Any] = {}
        seg_spec = _stage_segmentation(stage, Path(segmentation), parity)
        models = {k: _stage_selection(stage, k, sel_dirs[k], parity)
                  for k in MODELS if k in sel_dirs}
        fused_model = (_stage_selection(stage, "fused", Path(fused), parity)
                       if fused is not None else None)
        for entry in [*models.values(), *([fused_model] if fused_model else [])]:
            _check_image_size(root / entry.path, pre.image_size_px)
        prov = provenance if provenance is not None else Provenance()
        if not prov.exported_with:
            prov = prov.model_copy(update={"exported_with": f"hccatom {__version__}"})
        try:
            manifest = Manifest(
                schema_version=SCHEMA_VERSION,
                name=name,
                version=version,
                created_at=created_at or datetime.now(timezone.utc),
                intended_use=intended_use,
                synthetic=synthetic,
                provenance=prov,
                files=stage.entries,
                preprocessing=pre,
                segmentation=SegmentationSection(directory=SEGMENTATION_DIR, spec=seg_spec),
                selection=SelectionSpec(
                    image_size_px=pre.image_size_px,
                    norm_mean=pre.norm_mean,
                    norm_std=pre.norm_std,
                    clinical_encoding=enc,
                    models=models,
                    fused=fused_model,
                    explain=_explain_spec(stage, clinical_reference, reference_source),
                ),
                thresholds=dict(thresholds),
                policy=policy if policy is not None else AtomPolicy.atom_v1(),
                parity=parity,
                safety=safety,
            )
        except ValueError as exc:
            raise ExportError(f"the bundle manifest does not validate: {exc}") from exc
        (root / MANIFEST_NAME).write_text(
            manifest.model_dump_json(by_alias=True, indent=2) + "\n", encoding="utf-8"
        )
        if sign_key is not None:
            from hccatom.bundle.signer import sign_bundle

            sign_bundle(root, sign_key, label=sign_label)
        if verify:
            report = verify_bundle(load_bundle(root), device="cpu", run_models=True)
            if not report.ok:
                raise ExportError("the built bundle does not verify:\n" + report.text())
        if out_path.exists():
            if out_path.is_dir():
                shutil.rmtree(out_path)
            else:
                out_path.unlink()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if as_zip:
            write_zip(root, out_path)
        else:
            shutil.copytree(root, out_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("bundle written to %s", out_path)
    return out_path


def _explain_spec(stage: _Staging, reference: Mapping[str, ReferenceValue] | None,
                  source: str) -> ExplainSpec | None:
    """The manifest's explain section from the staged explain graphs, or None if empty."""
    graphs = {e.role.rsplit(".", 1)[1]: e.path for e in stage.entries
              if e.role.startswith("selection.explain.")}
    unknown = sorted(set(graphs) - set(MODELS))
    if unknown:
        raise ExportError(f"explain graphs for unknown cohort(s) {unknown}; name them "
                          "selection_<cohort>.explain.onnx.")
    if not graphs and reference is None:
        return None
    return ExplainSpec(graphs=graphs, clinical_reference=dict(reference) if reference else None,
                       reference_source=source)


def write_zip(folder: Path, dest: Path) -> Path:
    """Zip a bundle folder: ``manifest.json`` first, then files in sorted order."""
    files = [folder / MANIFEST_NAME] + [p for p in _files(folder) if p.name != MANIFEST_NAME
                                        or p.parent != folder]
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in files:
            zf.write(p, p.relative_to(folder).as_posix())
    return dest


__all__ = [
    "build_bundle",
    "check_bundle_output",
    "find_selection_export",
    "parse_thresholds",
    "write_zip",
]
