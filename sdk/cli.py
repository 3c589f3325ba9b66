"""The ``hccatom`` command line.

Subcommands::

    hccatom recommend --bundle B --arterial PATH --portal PATH --clinical FILE.json
                      [--json OUT] [--device auto|cpu|cuda|tensorrt] [--threads N]
                      [--precision fp16|fp32]
    hccatom study DIR                 (a DICOM study's series and the phases chosen; dicom extra)
    hccatom bundle build --segmentation DIR --selection TACE=DIR HAIC=DIR TC=DIR HC=DIR
                         [--fused DIR] --thresholds ... --out DIR|FILE.zip
                         [--sign-key PRIVATE.pem]
    hccatom bundle verify PATH [--trusted-key PUB.pem] [--expect-sha256 DIGEST] [--no-run]
    hccatom bundle info PATH [--json]
    hccatom bundle keygen --private PRIVATE.pem --public PUB.pem
    hccatom bundle sign PATH --key PRIVATE.pem
    hccatom demo ...                  (hccatom.demo; ``demo build``: hccatom.export.demo_cli)
    hccatom export selection|nnunet   (build time, needs the export extra; imported lazily)
    hccatom bench [--bundle B] [--device ...] [--json OUT] ...   (hccatom.bench: latency)
    hccatom validate COHORT.csv --bundle B --out DIR | --demo   (hccatom.validation.command)

Every command takes ``-q/--quiet`` (no progress) and ``-v/--verbose`` (every stage, INFO
logs); progress goes to stderr, results to stdout. Exit codes: 0 success, 1 failure (export,
internal), 2 bad input, 3 bad bundle, 4 engine unavailable, 5 an optional extra is not
installed (the message names the pip line), 141 stdout closed early (``| head``).
Errors print one clear message; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from hccatom import __version__
from hccatom.cli_examples import attach_examples
from hccatom.cli_progress import StderrProgress, progress_for
from hccatom.errors import (
    BundleError,
    ClinicalInputError,
    EngineError,
    EngineInputError,
    EngineUnavailableError,
    ExportError,
    ExtraMissingError,
    HccatomError,
    InputError,
    SegmentationError,
)
from hccatom.path_checks import (
    check_input_file,
    check_input_folder,
    check_output_file,
    check_output_folder,
)
from hccatom.precision import PRECISIONS

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_BAD_BUNDLE, EXIT_NO_ENGINE = 0, 1, 2, 3, 4
EXIT_NO_EXTRA = 5  # an optional extra is not installed (the message names the pip line)
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head` reports

log = logging.getLogger("hccatom.cli")

#: Lazily imported subcommand modules: (command path) -> module providing
#: ``configure_parser(parser)`` and ``run(args) -> int``.
LAZY_COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("export", "selection"): ("hccatom.export.selection_cli",
                              "SELECTION checkpoint(s) -> ONNX with a parity report"),
    ("export", "nnunet"): ("hccatom.export.nnunet_cli",
                           "nnU-Net v2 model folder -> ONNX per fold + segmentation spec"),
    ("demo", "build"): ("hccatom.export.demo_cli",
                         "rebuild the synthetic demo bundle (needs the export extra)"),
    ("export", "triton"): ("hccatom.serve.repo_cli",
                           "bundle -> Triton model repository (needs the serve extra)"),
    ("explain",): ("hccatom.export.explain_cli",
                   "Grad-CAM of a SELECTION checkpoint beside the bundle's rollout "
                   "(needs the export extra)"),
}
DEMO_MODULE = "hccatom.demo"
#: What a lazily imported command needs beyond the runtime; checked before any work starts.
NEEDS_EXTRA: dict[tuple[str, ...], tuple[str, ...]] = {
    ("export", "selection"): ("torch", "onnx", "onnxscript", "safetensors"),
    ("export", "nnunet"): ("torch", "nnunetv2", "onnx", "onnxscript"),
    ("demo", "build"): ("torch", "torchvision", "nnunetv2", "onnx", "onnxscript"),
    ("explain",): ("torch", "safetensors"),
}
#: The install line of the export extra (torch pinned as DEVELOPERS.md says).
EXPORT_INSTALL = 'pip install "torch==2.14.1" "torchvision==0.29.1" "hccatom[export]"'


def exit_code_for(exc: BaseException) -> int:
    """The CLI exit code of an error."""
    if isinstance(exc, ExtraMissingError):  # before the kinds an extra's error also is
        return EXIT_NO_EXTRA
    if isinstance(exc, EngineUnavailableError):
        return EXIT_NO_ENGINE
    if isinstance(exc, BundleError | EngineInputError):
        return EXIT_BAD_BUNDLE
    if isinstance(exc, EngineError):
        return EXIT_NO_ENGINE
    if isinstance(exc, InputError | SegmentationError):
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def error_message(exc: BaseException) -> str:
    """One clear message (every clinical problem listed)."""
    kind = {
        EXIT_BAD_INPUT: "bad input",
        EXIT_BAD_BUNDLE: "bad bundle",
        EXIT_NO_ENGINE: "engine unavailable",
        EXIT_NO_EXTRA: "not installed",
    }.get(exit_code_for(exc), "error")
    if isinstance(exc, ExportError):
        kind = "export failed"
    if isinstance(exc, ClinicalInputError) and exc.problems:
        head = str(exc).split("):", 1)[0] + ")" if "):" in str(exc) else str(exc)
        listed = "\n".join(f"  - {field}: {problem}" for field, problem in exc.problems)
        return f"hccatom: {kind}: {head}:\n{listed}"
    return f"hccatom: {kind}: {exc}"


# --- options every command takes ------------------------------------------------------
def _output_options(defaults: bool) -> argparse.ArgumentParser:
    """``-q/--quiet`` and ``-v/--verbose``; leaf commands take them too (``demo -q``)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_mutually_exclusive_group()
    kw: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    g.add_argument("-v", "--verbose", action="store_true",
                   help="show every stage and INFO logs on stderr", **kw)
    g.add_argument("-q", "--quiet", action="store_true",
                   help="no progress on stderr (errors are still printed)", **kw)
    return p


LEAF = _output_options(defaults=False)


def _trust_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trusted-key", action="append", type=Path, default=None,
                   metavar="PUB.pem", dest="trusted_keys",
                   help="Ed25519 public key of the bundle's publisher (repeatable): the "
                   "bundle must carry a valid signature by one of them")
    p.add_argument("--expect-sha256", metavar="DIGEST",
                   help="refuse the bundle unless its digest (shown by `bundle verify`) is this")


# --- recommend ------------------------------------------------------------------------
def _add_recommend(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "recommend", help="run the whole chain for one patient", parents=[LEAF],
        description="Two CT phases + clinical variables -> ATOM recommendation.",
    )
    p.add_argument("--bundle", required=True, type=Path, help="bundle directory or .zip")
    p.add_argument("--arterial",
                   help="arterial phase: DICOM folder or NIfTI/NRRD/MHA file; with --study, "
                   "the Series Instance UID of the arterial series (overrides the rules)")
    p.add_argument("--portal", help="portal phase: DICOM folder or file; with --study, a "
                   "Series Instance UID")
    p.add_argument("--study", type=Path, metavar="DIR",
                   help="a whole DICOM study folder: the arterial and portal series are found "
                   "by documented rules (dicom extra)")
    p.add_argument("--dicom-out", type=Path, metavar="DIR",
                   help="with DICOM input: write DICOM SEG, SR and a report image into DIR "
                   "(dicom extra)")
    p.add_argument("--clinical", required=True, type=Path,
                   help="clinical variables JSON (see examples/clinical_example.json)")
    p.add_argument("--json", type=Path, metavar="OUT",
                   help="write the full recommendation as JSON ('-' for stdout only)")
    p.add_argument("--report", type=Path, metavar="OUT",
                   help="write the one-page visual report (.pdf or .png; report extra), with "
                   "relevance maps and attributions when the bundle has explain graphs")
    p.add_argument("--explain", nargs="?", const="variables", default=None,
                   choices=("variables", "groups", "rollout"),  # hccatom.explain EXPLAIN_MODES
                   help="compute attention rollout and clinical attributions (needs a bundle "
                   "exported with `hccatom export selection ... --explain`); groups: one "
                   "attribution per clinical token group (cheaper), rollout: maps only")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per engine")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="network graph precision (default: the fp16 twin on CUDA when the "
                   "bundle has one, else fp32; see hccatom.precision)")
    p.add_argument("--no-mirroring", action="store_true",
                   help="segment without test-time mirroring (faster; nnU-Net mirrors by "
                   "default where the model allows it)")
    _trust_options(p)
    p.set_defaults(func=_run_recommend)


def _check_recommend_extras(args: argparse.Namespace) -> None:
    """Refuse --report without the report extra and --study/--dicom-out without the dicom
    extra before any work, so the user does not wait for a result that is then lost."""
    if args.study is not None or args.dicom_out is not None:
        from hccatom.dicom import require_extra

        require_extra()
    if args.report is not None and importlib.util.find_spec("matplotlib") is None:
        from hccatom.report import ReportUnavailableError

        raise ReportUnavailableError(
            f"--report {args.report} needs the report extra (matplotlib is not installed); "
            "nothing was run. Install it with: pip install 'hccatom[report]', or drop --report.")


def _run_recommend(args: argparse.Namespace) -> int:
    from hccatom.clinical import ClinicalVariables
    from hccatom.phases import PHASES
    from hccatom.predictor import CTStudy, Predictor

    if args.study is None:
        for name in PHASES:
            if getattr(args, name) is None:
                raise InputError(f"--{name} is required (or pass a whole DICOM --study DIR).")
            if not Path(getattr(args, name)).exists():
                raise InputError(f"--{name} {getattr(args, name)}: no such file or folder.")
            if not Path(getattr(args, name)).is_dir():  # FIFO, device, huge: refused now
                check_input_file(getattr(args, name), f"--{name}")
        if args.dicom_out is not None and not (Path(args.arterial).is_dir()
                                               and Path(args.portal).is_dir()):
            raise InputError("--dicom-out needs DICOM input: --study DIR, or a DICOM series "
                             "folder for each of --arterial and --portal.")
    elif not args.study.is_dir():
        raise InputError(f"--study {args.study}: no such folder.")
    else:
        check_input_folder(args.study, "--study")
    if args.report is not None and args.report.suffix.lower() not in (".pdf", ".png"):
        raise InputError(f"--report {args.report}: use a .pdf or .png file name.")
    _check_recommend_extras(args)  # before the chain runs: a late refusal loses the result
    _check_outputs(args)  # before the expensive work: a bad output path fails now
    try:
        clinical = ClinicalVariables.from_json(args.clinical)
    except ClinicalInputError as exc:
        raise ClinicalInputError(f"--clinical {args.clinical}: {exc}", exc.problems) from exc
    progress = args.progress
    t0 = time.perf_counter()
    with progress.stage("load_bundle"):
        predictor = Predictor.from_bundle(
            args.bundle, device=args.device, threads=args.threads,
            mirroring=False if args.no_mirroring else None, precision=args.precision,
            trusted_keys=args.trusted_keys, expect_sha256=args.expect_sha256,
        )
    load_ms = (time.perf_counter() - t0) * 1000
    explain = args.explain or (args.report is not None and predictor.explainer.available)
    with predictor:
        if args.study is not None:
            rec = predictor.recommend(study=args.study, clinical=clinical,
                                      arterial=args.arterial, portal=args.portal,
                                      progress=progress, explain=explain)
        else:
            rec = predictor.recommend(CTStudy(arterial=args.arterial, portal=args.portal),
                                      clinical, progress=progress, explain=explain)
        written = rec.to_dicom(args.dicom_out) if args.dicom_out is not None else []
        report = rec.report(args.report) if args.report is not None else None
    progress.close()
    if args.json is not None and str(args.json) == "-":
        sys.stdout.write(rec.to_json() + "\n")
        return EXIT_OK
    print(rec.summary())
    graphs = "/".join(sorted(set(predictor.precisions.values()))) or "fp32"
    print(f"(bundle loaded in {load_ms:.0f} ms; network graphs {graphs})")
    if args.json is not None:
        rec.to_json(args.json)
        print(f"JSON written to {args.json}")
    if written:
        print(f"DICOM written to {args.dicom_out}: " + ", ".join(p.name for p in written))
    if report is not None:
        print(f"report written to {report}"
              + ("" if explain else " (no relevance maps: bundle has no explain graphs)"))
    return EXIT_OK


def _check_outputs(args: argparse.Namespace) -> None:
    """--json / --report / --dicom-out can be written (hccatom.path_checks)."""
    for flag, path in (("--json", args.json), ("--report", args.report)):
        if path is not None and str(path) != "-":
            check_output_file(path, flag)
    if args.dicom_out is not None:
        check_output_folder(args.dicom_out, "--dicom-out")


# --- study ----------------------------------------------------------------------------
def _add_study(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "study", help="list a DICOM study's series and the phases the rules choose",
        parents=[LEAF], description="Index a DICOM study folder (headers only; progress on "
        "stderr), list its series (number, UID, slices, slice spacing; no free text) and the "
        "arterial and portal series that `recommend --study` would use, with the rules that "
        "chose them. Exit 2 when the phases cannot be chosen (the message says how to choose "
        "them). Needs the dicom extra.")
    p.add_argument("study", type=Path, metavar="DIR", help="the DICOM study folder")
    p.set_defaults(func=_run_study)


def _run_study(args: argparse.Namespace) -> int:
    from hccatom.dicom import require_extra

    require_extra()
    from hccatom.dicom.index import index_study
    from hccatom.dicom.phases import eligibility, find_phases

    if not args.study.is_dir():
        raise InputError(f"{args.study}: no such folder; pass a DICOM study folder.")
    check_input_folder(args.study, "study folder")
    index = index_study(args.study, progress=args.progress)
    args.progress.close()  # the live line ends before the listing
    print(index.listing({s.series_instance_uid: f"excluded: {why}" for s in index.series
                         if (why := eligibility(s)) is not None}))
    selection = find_phases(index)  # PhaseSelectionError: exit 2, says how to choose
    for choice in (selection.arterial, selection.portal):
        print(f"{choice.phase}: {choice.series.brief()}, confidence {choice.confidence:.2f}, "
              f"rules {', '.join(choice.rules)}")
    return EXIT_OK


# --- bundle ---------------------------------------------------------------------------
def _add_bundle(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bundle", help="build, verify, describe or sign a model bundle")
    bsub = p.add_subparsers(dest="bundle_command",
                            metavar="{build,verify,info,keygen,sign}")
    bsub.required = True

    b = bsub.add_parser("build", help="assemble a bundle from export folders", parents=[LEAF],
                        description="Assemble, write, sign (with --sign-key) and verify a "
                        "bundle.")
    b.add_argument("--segmentation", required=True, type=Path, metavar="DIR",
                   help="`hccatom export nnunet` output folder")
    b.add_argument("--selection", nargs="+", default=[], metavar="COHORT=DIR",
                   help="`hccatom export selection` folders: TACE=DIR HAIC=DIR TC=DIR HC=DIR")
    b.add_argument("--fused", type=Path, metavar="DIR",
                   help="folder of the fused four-score SELECTION graph")
    b.add_argument("--out", required=True, type=Path, metavar="DIR|FILE.zip")
    thr = b.add_mutually_exclusive_group(required=True)
    thr.add_argument("--thresholds", metavar="JSON|TACE=..,HAIC=..,TC=..,HC=..",
                     help="the MSS of each model's training set")
    thr.add_argument("--paper-thresholds", action="store_true",
                     help="use the paper's MSS (only for the paper's own models)")
    b.add_argument("--name", help="bundle name (default: the --out file name)")
    b.add_argument("--version", dest="bundle_version", default="0.1.0",
                   help="bundle version (default 0.1.0)")
    b.add_argument("--policy", type=Path, metavar="JSON", help="ATOM policy (default atom-v1)")
    b.add_argument("--preprocessing", type=Path, metavar="JSON",
                   help="CT preprocessing spec (default: PreprocessSpec(); each field says "
                   "whether its default is the paper's, the authors' code's or ours)")
    b.add_argument("--window-before-segmentation", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="whether the segmentation model was trained on HU-windowed CT; required "
                   "unless the segmentation export or --preprocessing records it")
    b.add_argument("--clinical-encoding", type=Path, metavar="JSON",
                   help="clinical encoding spec (default: raw values in the authors' "
                   "group order, ClinicalEncoding.raw_values)")
    b.add_argument("--provenance", type=Path, metavar="JSON",
                   help="who trained what on which data (free text fields)")
    b.add_argument("--safety", type=Path, metavar="JSON",
                   help="safety limits (docs/safety.md; default: hccatom's defaults)")
    b.add_argument("--training-clinical", type=Path, metavar="JSON",
                   help="the training cohort's clinical records (JSON list): their ranges are "
                   "stored so that results flag patients outside them")
    b.add_argument("--clinical-reference", type=Path, metavar="JSON",
                   help="reference values for clinical attributions: an object (variable -> "
                   "value) or the training cohort's records (JSON list: medians / most "
                   "frequent values are stored)")
    b.add_argument("--intended-use", help="intended-use statement")
    b.add_argument("--synthetic", action="store_true",
                   help="mark the models as trained on synthetic data")
    b.add_argument("--sign-key", type=Path, metavar="PRIVATE.pem",
                   help="sign the manifest with this Ed25519 private key (bundle keygen)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    b.add_argument("--no-verify", action="store_true",
                   help="skip running every model once after writing")
    b.set_defaults(func=_run_bundle_build)

    v = bsub.add_parser("verify", parents=[LEAF],
                        help="check signature, checksums, and run every model once",
                        description="Check the manifest's signature and digest, every file's "
                        "checksum, and run every model once on synthetic inputs.")
    v.add_argument("path", type=Path)
    v.add_argument("--device", choices=("auto", "cpu", "cuda", "tensorrt"), default="cpu")
    v.add_argument("--no-run", action="store_true",
                   help="check signature and checksums only; run no model")
    _trust_options(v)
    v.set_defaults(func=_run_bundle_verify)

    i = bsub.add_parser("info", help="print a readable summary of a bundle", parents=[LEAF])
    i.add_argument("path", type=Path)
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.set_defaults(func=_run_bundle_info)

    k = bsub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles",
                        parents=[LEAF], description="Write a new Ed25519 key pair (PEM). Keep "
                        "the private key secret; give the public key to those who deploy.")
    k.add_argument("--private", required=True, type=Path, metavar="PRIVATE.pem")
    k.add_argument("--public", required=True, type=Path, metavar="PUB.pem")
    k.add_argument("--overwrite", action="store_true", help="replace existing key files")
    k.set_defaults(func=_run_bundle_keygen)

    g = bsub.add_parser("sign", help="sign a bundle's manifest (detached signature)",
                        parents=[LEAF], description="Check a bundle's checksums, then write a "
                        "detached Ed25519 signature over its canonical manifest.")
    g.add_argument("path", type=Path, help="bundle folder or .zip (signed in place)")
    g.add_argument("--key", required=True, type=Path, metavar="PRIVATE.pem")
    g.add_argument("--label", default=None, help="free text naming the key")
    g.set_defaults(func=_run_bundle_sign)


def _read_model(path: Path, cls: Any, what: str) -> Any:
    check_input_file(path, f"--{what}", max_bytes=4 << 20)  # FIFO, device: unopened
    from hccatom.safe_json import JSONLimits, read_limited

    try:  # pydantic's JSON parser bounds depth and numbers; the size is bounded here
        return cls.model_validate_json(read_limited(path, JSONLimits(max_bytes=4 << 20),
                                                    what=f"--{what}", error=InputError))
    except InputError:
        raise  # swapped for a FIFO or device after the check: refused as by the check
    except OSError as exc:
        raise InputError(f"--{what} {path}: cannot read ({exc}).") from exc
    except ValueError as exc:
        raise InputError(f"--{what} {path}: does not validate: {exc}") from exc


def _bundle_safety(args: argparse.Namespace) -> Any:
    """``--safety`` limits, with ``--training-clinical``'s ranges added (None: neither)."""
    from hccatom.safety import SafetyLimits, training_population_from_json

    if args.safety is None and args.training_clinical is None:
        return None
    limits = _read_model(args.safety, SafetyLimits, "safety") if args.safety else SafetyLimits()
    if args.training_clinical is not None:
        pop = training_population_from_json(args.training_clinical)
        limits = limits.model_copy(update={"training_population": pop})
    return limits


def _run_bundle_build(args: argparse.Namespace) -> int:
    with args.progress.stage("build_bundle"):  # copies, checksums, runs every model once
        out = _build_bundle(args)
    args.progress.close()
    print(f"bundle written to {out}" + (" and signed" if args.sign_key else "")
          + ("" if args.no_verify else " and verified"))
    return EXIT_OK


def _build_bundle(args: argparse.Namespace) -> Path:
    from hccatom.atom import PAPER_MSS, AtomPolicy
    from hccatom.bundle import RESEARCH_USE_ONLY, Provenance
    from hccatom.bundle.specs import ClinicalEncoding, PreprocessSpec, SegmentationSpec
    from hccatom.bundle.window_choice import resolve_window_before_segmentation
    from hccatom.bundle.writer import build_bundle, check_bundle_output, parse_thresholds
    from hccatom.cli_args import cohort_paths

    check_bundle_output(args.out, "--out", error=InputError)  # before copies and verify
    if args.sign_key is not None:
        check_input_file(args.sign_key, "--sign-key")
    thresholds = dict(PAPER_MSS) if args.paper_thresholds else parse_thresholds(args.thresholds)
    out = build_bundle(
        args.out,
        sign_key=args.sign_key,
        segmentation=args.segmentation,
        selection=cohort_paths(args.selection, "--selection", "TACE=DIR"),
        fused=args.fused,
        name=args.name or args.out.name.removesuffix(".zip"),
        version=args.bundle_version,
        thresholds=thresholds,
        policy=_read_model(args.policy, AtomPolicy, "policy") if args.policy else None,
        preprocessing=resolve_window_before_segmentation(
            _read_model(args.preprocessing, PreprocessSpec, "preprocessing")
            if args.preprocessing else None,
            SegmentationSpec.load(args.segmentation), args.window_before_segmentation),
        clinical_encoding=(_read_model(args.clinical_encoding, ClinicalEncoding,
                                       "clinical-encoding") if args.clinical_encoding else None),
        provenance=(_read_model(args.provenance, Provenance, "provenance")
                    if args.provenance else None),
        intended_use=args.intended_use or RESEARCH_USE_ONLY,
        synthetic=args.synthetic,
        overwrite=args.overwrite,
        verify=not args.no_verify,
        safety=_bundle_safety(args),
        **_clinical_reference(args.clinical_reference),
    )
    return Path(out)


def _clinical_reference(path: Path | None) -> dict[str, Any]:
    """build_bundle's reference arguments from --clinical-reference (none when absent)."""
    if path is None:
        return {}
    from hccatom.bundle.explain_spec import reference_from_json

    values, source = reference_from_json(path)
    return {"clinical_reference": values, "reference_source": source}


def _run_bundle_verify(args: argparse.Namespace) -> int:
    from hccatom.bundle import verify_bundle

    progress = args.progress
    with progress.stage("load_bundle"):  # signature, digest, checksums
        from hccatom.bundle import load_bundle

        bundle = load_bundle(args.path, trusted_keys=args.trusted_keys,
                             expect_sha256=args.expect_sha256)
    with bundle, progress.stage("run_models") as tick:
        report = verify_bundle(bundle, device=args.device, run_models=not args.no_run,
                               progress=lambda _name, done, total: tick(done, total))
    progress.close()
    print(report.text())
    return EXIT_OK if report.ok else EXIT_BAD_BUNDLE


def _run_bundle_info(args: argparse.Namespace) -> int:
    from hccatom.bundle import bundle_summary, load_bundle

    with load_bundle(args.path) as bundle:
        if args.json:
            print(json.dumps(json.loads(bundle.manifest.model_dump_json(by_alias=True)),
                             indent=2))
        else:
            print(bundle_summary(bundle))
    return EXIT_OK


def _run_bundle_keygen(args: argparse.Namespace) -> int:
    from hccatom.bundle.signer import generate_keypair

    kid = generate_keypair(args.private, args.public, overwrite=args.overwrite)
    print(f"key {kid}: private key {args.private} (keep it secret; sign with "
          f"`hccatom bundle sign B --key {args.private}`), public key {args.public} (give it "
          "to those who deploy: `--trusted-key`)")
    return EXIT_OK


def _run_bundle_sign(args: argparse.Namespace) -> int:
    from hccatom.bundle.signer import sign_bundle

    with args.progress.stage("sign_bundle"):  # checksums first: only intact bundles
        sig = sign_bundle(args.path, args.key, label=args.label)
    args.progress.close()
    print(f"signed {args.path} with key {sig.key_id}; bundle digest {sig.bundle_sha256}"
          + ("\nNOTE: this is the public DEMO key; its signature proves nothing."
             if "DEMO" in sig.key_label else ""))
    return EXIT_OK


# --- lazy subcommands (export, demo) ----------------------------------------------------
_EXPORT_DEPS = {"torch", "torchvision", "nnunetv2", "onnx", "onnxscript", "safetensors"}


def _missing_extra(exc: ModuleNotFoundError, module: str, command: str) -> HccatomError:
    missing = exc.name or module
    if missing.split(".")[0] in _EXPORT_DEPS:
        return ExtraMissingError(
            f"`hccatom {command}` needs the export extra ({missing} is not installed): "
            f"{EXPORT_INSTALL}"
        )
    return ExtraMissingError(
        f"`hccatom {command}` is not available in this installation ({missing} is missing)."
    )


def _check_extra(path: tuple[str, ...]) -> None:
    """Refuse before any work when the command's extra is not installed."""
    missing = [m for m in NEEDS_EXTRA.get(path, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise ExtraMissingError(
            f"`hccatom {' '.join(path)}` needs the export extra ({', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed); nothing was done. "
            f"Install it with: {EXPORT_INSTALL}"
        )


def _import_command(module: str, command: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise _missing_extra(exc, module, command) from exc


def _configure_lazy(mod: ModuleType, parser: argparse.ArgumentParser, command: str) -> None:
    """Let a lazily imported module add its arguments and its runner (help never needs the
    extra; running checks it first)."""
    try:
        mod.configure_parser(parser)
    except ModuleNotFoundError as exc:
        raise _missing_extra(exc, mod.__name__, command) from exc

    def run(args: argparse.Namespace) -> int:
        _check_extra(tuple(command.split()))
        stage = command.replace(" ", "_")
        try:
            if command == "demo":  # the demo shows its own stages
                return int(mod.run(args))
            with args.progress.stage(stage):  # never silent: "still running" lines
                return int(mod.run(args))
        except ModuleNotFoundError as exc:
            raise _missing_extra(exc, mod.__name__, command) from exc

    parser.set_defaults(func=run)


def _add_lazy(sub: argparse._SubParsersAction[argparse.ArgumentParser],
              argv: Sequence[str]) -> None:
    """Add export/demo; configure (and import) only the command the arguments select."""
    export = sub.add_parser("export", help="build time: export models (needs the export extra)")
    esub = export.add_subparsers(dest="export_command",
                                 metavar="{selection,nnunet,triton}")
    esub.required = True
    demo = sub.add_parser("demo", help="run the synthetic demo (demo build: rebuild it)",
                          add_help=False, parents=[LEAF])
    chosen = tuple(a for a in argv if not a.startswith("-"))[:2]
    explain = sub.add_parser("explain", help=LAZY_COMMANDS[("explain",)][1],
                             description=LAZY_COMMANDS[("explain",)][1], parents=[LEAF])
    if chosen[:1] == ("explain",):
        _configure_lazy(_import_command(LAZY_COMMANDS[("explain",)][0], "explain"), explain,
                        "explain")
    for path, (module, help_text) in LAZY_COMMANDS.items():
        if path[0] == "export":
            p = esub.add_parser(path[1], help=help_text, description=help_text,
                                parents=[LEAF])
        else:
            continue
        if chosen == path:
            command = " ".join(path)
            _configure_lazy(_import_command(module, command), p, command)
    if chosen[:1] == ("demo",):
        demo_path = ("demo", "build")
        if chosen == demo_path:
            dsub = demo.add_subparsers(dest="demo_command")
            p = dsub.add_parser("build", help=LAZY_COMMANDS[demo_path][1], parents=[LEAF])
            command, module = "demo build", LAZY_COMMANDS[demo_path][0]
        else:
            p = demo
            command, module = "demo", DEMO_MODULE
            p.add_argument("-h", "--help", action="help", help="show this help message and exit")
        _configure_lazy(_import_command(module, command), p, command)


def _add_validate(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                  argv: Sequence[str]) -> None:
    """``validate`` (hccatom.validation.command; the validate extra is checked when it runs)."""
    help_text = "evaluate a bundle on a site's cohort as the paper did (validate extra)"
    p = sub.add_parser("validate", help=help_text, description=help_text, parents=[LEAF])
    if "validate" in argv:
        from hccatom.validation import command

        command.configure_parser(p)
        p.set_defaults(func=command.run)


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from hccatom import bench

    p = sub.add_parser("bench", help="per-stage latency of the whole chain on this machine",
                       parents=[LEAF])
    bench.configure_parser(p)
    p.set_defaults(func=bench.run)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from hccatom.serve import serve_cli  # light: PyTriton loads only when it runs

    p = sub.add_parser("serve", help="serve the chain behind Triton (needs the serve extra)",
                       parents=[LEAF], description="Serve Predictor.recommend behind Triton "
                       "(PyTriton). Prints 'hccatom serve: ready ...' on stdout when ready; "
                       "stops on SIGTERM after in-flight requests finish.")
    serve_cli.configure_parser(p)
    p.set_defaults(func=serve_cli.run)


# --- main -----------------------------------------------------------------------------
def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser; ``argv`` selects which lazy subcommand gets configured."""
    parser = argparse.ArgumentParser(
        prog="hccatom", parents=[_output_options(defaults=True)],
        description="SELECTION/ATOM treatment-planning inference for unresectable HCC. "
        "Research use only: not a medical device.",
    )
    parser.add_argument("--version", action="version", version=f"hccatom {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_recommend(sub)
    _add_study(sub)
    _add_bundle(sub)
    _add_bench(sub)
    _add_serve(sub)
    _add_validate(sub, argv)
    _add_lazy(sub, argv)
    attach_examples(parser)
    return parser


def _stdout_gone() -> int:
    """stdout was closed by the reader (``| head``): stop quietly, as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hccatom`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        parser = build_parser(args_list)
        if not args_list:  # a first try: the command list, not "arguments are required"
            parser.print_help(sys.stderr)
            return EXIT_BAD_INPUT
        args = parser.parse_args(args_list)
        logging.basicConfig(
            level=logging.INFO if args.verbose else
            logging.ERROR if args.quiet else logging.WARNING,
            format="hccatom: %(levelname)s: %(message)s",
        )
        args.progress = progress_for(args, sys.stderr)
        try:
            code = int(args.func(args))
        finally:
            args.progress.close()
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except BrokenPipeError:
        return _stdout_gone()
    except HccatomError as exc:
        if debug:
            traceback.print_exc()
        _print_error(error_message(exc))
        return exit_code_for(exc)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _print_error("hccatom: interrupted")
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _print_error(f"hccatom: internal error: {type(exc).__name__}: {exc} (run with --debug "
                     "for the traceback)")
        return EXIT_FAILED


def _print_error(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr gone: the exit code says it
        print(text, file=sys.stderr)


__all__ = ["StderrProgress", "build_parser", "error_message", "exit_code_for", "main"]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
