"""The ``hccatom`` command line.

Subcommands::

    hccatom recommend --bundle B --arterial PATH --portal PATH --clinical FILE.json
                      [--json OUT] [--device auto|cpu|cuda|tensorrt] [--threads N]
    hccatom bundle build --segmentation DIR --selection TACE=DIR HAIC=DIR TC=DIR HC=DIR
                         [--fused DIR] --thresholds ... --out DIR|FILE.zip
    hccatom bundle verify PATH        hccatom bundle info PATH
    hccatom demo ...                  (hccatom.demo; ``demo build``: hccatom.export.demo_cli)
    hccatom export selection|nnunet   (build time, needs the export extra; imported lazily)

Exit codes: 0 success, 1 failure (export, internal), 2 bad input, 3 bad bundle, 4 engine
unavailable. Errors print one clear message; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from hccatom import __version__
from hccatom.errors import (
    BundleError,
    ClinicalInputError,
    EngineError,
    EngineInputError,
    EngineUnavailableError,
    ExportError,
    HccatomError,
    InputError,
    SegmentationError,
)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_BAD_BUNDLE, EXIT_NO_ENGINE = 0, 1, 2, 3, 4

log = logging.getLogger("hccatom.cli")

#: Lazily imported subcommand modules: (command path) -> module providing
#: ``configure_parser(parser)`` and ``run(args) -> int``.
LAZY_COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("export", "selection"): ("hccatom.export.selection_cli",
                              "SELECTION checkpoint(s) -> ONNX with a parity report"),
    ("export", "nnunet"): ("hccatom.export.nnunet_cli",
                           "nnU-Net v2 model folder -> ONNX per fold + segmentation spec"),
    ("demo", "build"): ("hccatom.export.demo_cli", "rebuild the synthetic demo bundle"),
}
DEMO_MODULE = "hccatom.demo"


def exit_code_for(exc: BaseException) -> int:
    """The CLI exit code of an error."""
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
    }.get(exit_code_for(exc), "error")
    if isinstance(exc, ExportError):
        kind = "export failed"
    if isinstance(exc, ClinicalInputError) and exc.problems:
        head = str(exc).split("):", 1)[0] + ")" if "):" in str(exc) else str(exc)
        listed = "\n".join(f"  - {field}: {problem}" for field, problem in exc.problems)
        return f"hccatom: {kind}: {head}:\n{listed}"
    return f"hccatom: {kind}: {exc}"


# --- progress ------------------------------------------------------------------------
class TtyProgress:
    """Shows a stage on a terminal once it has taken longer than ``after_s``."""

    def __init__(self, stream: TextIO, after_s: float = 1.0) -> None:
        self.stream = stream
        self.after_s = after_s
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self._shown = False

    def __call__(self, event: Any) -> None:
        if not self.enabled or event.elapsed_s < self.after_s:
            return
        finished = event.done >= event.total and event.total > 0 and event.elapsed_s > 0
        count = f" {event.done}/{event.total}" if event.total > 1 else ""
        self.stream.write(f"\r\x1b[K{event.stage}{count} {event.elapsed_s:.1f} s")
        if finished and event.total == 1:
            self.stream.write("\n")
            self._shown = False
        else:
            self._shown = True
        self.stream.flush()


# --- recommend ------------------------------------------------------------------------
def _add_recommend(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "recommend", help="run the whole chain for one patient",
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
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per engine")
    p.add_argument("--no-mirroring", action="store_true",
                   help="segment without test-time mirroring (faster; nnU-Net mirrors by "
                   "default where the model allows it)")
    p.set_defaults(func=_run_recommend)


def _run_recommend(args: argparse.Namespace) -> int:
    from hccatom.clinical import ClinicalVariables
    from hccatom.predictor import CTStudy, Predictor

    progress = TtyProgress(sys.stderr)
    if args.study is None:
        for name in ("arterial", "portal"):
            if getattr(args, name) is None:
                raise InputError(f"--{name} is required (or pass a whole DICOM --study DIR).")
            if not Path(getattr(args, name)).exists():
                raise InputError(f"--{name} {getattr(args, name)}: no such file or folder.")
        if args.dicom_out is not None and not (Path(args.arterial).is_dir()
                                               and Path(args.portal).is_dir()):
            raise InputError("--dicom-out needs DICOM input: --study DIR, or a DICOM series "
                             "folder for each of --arterial and --portal.")
    elif not args.study.is_dir():
        raise InputError(f"--study {args.study}: no such folder.")
    try:
        clinical = ClinicalVariables.from_json(args.clinical)
    except ClinicalInputError as exc:
        raise ClinicalInputError(f"--clinical {args.clinical}: {exc}", exc.problems) from exc
    t0 = time.perf_counter()
    predictor = Predictor.from_bundle(args.bundle, device=args.device, threads=args.threads,
                                      mirroring=False if args.no_mirroring else None)
    load_ms = (time.perf_counter() - t0) * 1000
    with predictor:
        if args.study is not None:
            rec = predictor.recommend(study=args.study, clinical=clinical,
                                      arterial=args.arterial, portal=args.portal,
                                      progress=progress)
        else:
            rec = predictor.recommend(CTStudy(arterial=args.arterial, portal=args.portal),
                                      clinical, progress=progress)
    written = rec.to_dicom(args.dicom_out) if args.dicom_out is not None else []
    if args.json is not None and str(args.json) == "-":
        sys.stdout.write(rec.to_json() + "\n")
        return EXIT_OK
    print(rec.summary())
    print(f"(bundle loaded in {load_ms:.0f} ms)")
    if args.json is not None:
        rec.to_json(args.json)
        print(f"JSON written to {args.json}")
    if written:
        print(f"DICOM written to {args.dicom_out}: " + ", ".join(p.name for p in written))
    return EXIT_OK


# --- bundle ---------------------------------------------------------------------------
def _add_bundle(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bundle", help="build, verify or describe a model bundle")
    bsub = p.add_subparsers(dest="bundle_command", metavar="{build,verify,info}")
    bsub.required = True

    b = bsub.add_parser("build", help="assemble a bundle from export folders",
                        description="Assemble, write and verify a bundle.")
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
                   help="CT preprocessing spec (default: the paper's values)")
    b.add_argument("--clinical-encoding", type=Path, metavar="JSON",
                   help="clinical encoding spec (default: the authors' raw values)")
    b.add_argument("--provenance", type=Path, metavar="JSON",
                   help="who trained what on which data (free text fields)")
    b.add_argument("--intended-use", help="intended-use statement")
    b.add_argument("--synthetic", action="store_true",
                   help="mark the models as trained on synthetic data")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    b.add_argument("--no-verify", action="store_true",
                   help="skip running every model once after writing")
    b.set_defaults(func=_run_bundle_build)

    v = bsub.add_parser("verify", help="check checksums and run every model once")
    v.add_argument("path", type=Path)
    v.add_argument("--device", choices=("auto", "cpu", "cuda", "tensorrt"), default="cpu")
    v.set_defaults(func=_run_bundle_verify)

    i = bsub.add_parser("info", help="print a readable summary of a bundle")
    i.add_argument("path", type=Path)
    i.add_argument("--json", action="store_true", help="print the manifest as JSON")
    i.set_defaults(func=_run_bundle_info)


def _read_model(path: Path, cls: Any, what: str) -> Any:
    try:
        return cls.model_validate_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"--{what} {path}: cannot read ({exc}).") from exc
    except ValueError as exc:
        raise InputError(f"--{what} {path}: does not validate: {exc}") from exc


def _parse_selection(items: Sequence[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise InputError(f"--selection entries look like TACE=DIR, got {item!r}.")
        key = key.strip().upper()
        if key in out:
            raise InputError(f"--selection gives {key} twice.")
        out[key] = Path(value)
    return out


def _run_bundle_build(args: argparse.Namespace) -> int:
    from hccatom.atom import PAPER_MSS, AtomPolicy
    from hccatom.bundle import RESEARCH_USE_ONLY, Provenance
    from hccatom.bundle.specs import ClinicalEncoding, PreprocessSpec
    from hccatom.export.bundle_writer import build_bundle, parse_thresholds

    thresholds = dict(PAPER_MSS) if args.paper_thresholds else parse_thresholds(args.thresholds)
    out = build_bundle(
        args.out,
        segmentation=args.segmentation,
        selection=_parse_selection(args.selection),
        fused=args.fused,
        name=args.name or args.out.name.removesuffix(".zip"),
        version=args.bundle_version,
        thresholds=thresholds,
        policy=_read_model(args.policy, AtomPolicy, "policy") if args.policy else None,
        preprocessing=(_read_model(args.preprocessing, PreprocessSpec, "preprocessing")
                       if args.preprocessing else None),
        clinical_encoding=(_read_model(args.clinical_encoding, ClinicalEncoding,
                                       "clinical-encoding") if args.clinical_encoding else None),
        provenance=(_read_model(args.provenance, Provenance, "provenance")
                    if args.provenance else None),
        intended_use=args.intended_use or RESEARCH_USE_ONLY,
        synthetic=args.synthetic,
        overwrite=args.overwrite,
        verify=not args.no_verify,
    )
    print(f"bundle written to {out}" + ("" if args.no_verify else " and verified"))
    return EXIT_OK


def _run_bundle_verify(args: argparse.Namespace) -> int:
    from hccatom.bundle import verify_bundle

    report = verify_bundle(args.path, device=args.device)
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


# --- lazy subcommands (export, demo) ----------------------------------------------------
_EXPORT_DEPS = {"torch", "torchvision", "nnunetv2", "onnx", "onnxscript", "safetensors"}


def _missing_extra(exc: ModuleNotFoundError, module: str, command: str) -> HccatomError:
    missing = exc.name or module
    if missing.split(".")[0] in _EXPORT_DEPS:
        return HccatomError(
            f"`hccatom {command}` needs the export extra ({missing} is not installed): "
            'pip install "hccatom[export]".'
        )
    return HccatomError(
        f"`hccatom {command}` is not available in this installation ({missing} is missing)."
    )


def _import_command(module: str, command: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise _missing_extra(exc, module, command) from exc


def _configure_lazy(mod: ModuleType, parser: argparse.ArgumentParser, command: str) -> None:
    """Let a lazily imported module add its arguments and its runner."""
    try:
        mod.configure_parser(parser)
    except ModuleNotFoundError as exc:
        raise _missing_extra(exc, mod.__name__, command) from exc

    def run(args: argparse.Namespace) -> int:
        try:
            return int(mod.run(args))
        except ModuleNotFoundError as exc:
            raise _missing_extra(exc, mod.__name__, command) from exc

    parser.set_defaults(func=run)


def _add_lazy(sub: argparse._SubParsersAction[argparse.ArgumentParser],
              argv: Sequence[str]) -> None:
    """Add export/demo; configure (and import) only the command the arguments select."""
    export = sub.add_parser("export", help="build time: export models (needs the export extra)")
    esub = export.add_subparsers(dest="export_command", metavar="{selection,nnunet}")
    esub.required = True
    demo = sub.add_parser("demo", help="run the synthetic demo (demo build: rebuild it)",
                          add_help=False)
    chosen = tuple(a for a in argv if not a.startswith("-"))[:2]
    for path, (module, help_text) in LAZY_COMMANDS.items():
        if path[0] == "export":
            p = esub.add_parser(path[1], help=help_text, description=help_text)
        else:
            continue
        if chosen == path:
            command = " ".join(path)
            _configure_lazy(_import_command(module, command), p, command)
    if chosen[:1] == ("demo",):
        demo_path = ("demo", "build")
        if chosen == demo_path:
            dsub = demo.add_subparsers(dest="demo_command")
            p = dsub.add_parser("build", help=LAZY_COMMANDS[demo_path][1])
            command, module = "demo build", LAZY_COMMANDS[demo_path][0]
        else:
            p = demo
            command, module = "demo", DEMO_MODULE
            p.add_argument("-h", "--help", action="help", help="show this help message and exit")
        _configure_lazy(_import_command(module, command), p, command)


# --- main -----------------------------------------------------------------------------
def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser; ``argv`` selects which lazy subcommand gets configured."""
    parser = argparse.ArgumentParser(
        prog="hccatom",
        description="SELECTION/ATOM treatment-planning inference for unresectable HCC. "
        "Research use only: not a medical device.",
    )
    parser.add_argument("--version", action="version", version=f"hccatom {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_recommend(sub)
    _add_bundle(sub)
    _add_lazy(sub, argv)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hccatom`` console script; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        parser = build_parser(args_list)
        args = parser.parse_args(args_list)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="hccatom: %(levelname)s: %(message)s",
        )
        return int(args.func(args))
    except HccatomError as exc:
        if debug:
            traceback.print_exc()
        print(error_message(exc), file=sys.stderr)
        return exit_code_for(exc)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("hccatom: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(f"hccatom: internal error: {type(exc).__name__}: {exc} (run with --debug for "
              "the traceback)", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
