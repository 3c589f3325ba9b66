"""``hccatom bench``: latency of the whole chain on this machine's CPU or GPU, per stage.

::

    hccatom bench [--bundle B] [--device auto|cpu|cuda|tensorrt]
                  [--study synthetic | --arterial P --portal P [--clinical FILE.json]]
                  [--size 512x512x200] [--small] [--repeats N] [--warmup K]
                  [--precision fp16|fp32] [--cuda-graphs] [--json OUT]
                  [--compare-nnunet MODEL_FOLDER]

Runs ``Predictor.recommend`` ``warmup + repeats`` times on one study (a seeded synthetic
phantom written to NIfTI, or the given files, so that reading is timed too) and reports per
stage (read, segment, crop per phase; clinical; SELECTION; ATOM; total) p50 / p90 / p99 /
min, studies per minute, peak host RSS and device memory, the providers actually used,
host <-> device bytes (engines that count them), and the FLOP floor of the segmentation
work against the device's peak. ``--compare-nnunet`` (export extra) times nnU-Net's own
``nnUNetPredictor`` on the same volumes in the same run. Progress goes to stderr; the JSON
holds everything plus the machine's facts.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from hccatom.bench_probe import (
    PeakSampler,
    machine_facts,
    network_flops,
    parse_size,
    peak_tflops,
    segmentation_evaluations,
)
from hccatom.errors import ExtraMissingError, InputError
from hccatom.path_checks import check_output_file
from hccatom.phases import PHASES
from hccatom.precision import PRECISIONS

if TYPE_CHECKING:
    from hccatom.predictor import ProgressCallback

#: Stages in table order (the Predictor's timing keys).
STAGES: tuple[str, ...] = (
    "read_arterial", "read_portal", "segment_arterial", "segment_portal",
    "crop_arterial", "crop_portal", "clinical", "selection", "atom", "total",
)
#: Benchmark study geometry: in-plane pixel (mm) and slice thickness (mm), as in issue 11.
DEFAULT_SPACING_ZYX = (1.0, 0.8, 0.8)


# --- statistics --------------------------------------------------------------------------
def summarise(values_ms: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / min / max / mean of a list of milliseconds (linear percentiles)."""
    a = np.asarray(values_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no timings to summarise")
    return {
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "n": int(a.size),
    }


def format_table(stages: Mapping[str, Mapping[str, float]]) -> str:
    """A fixed-width table of stage summaries (milliseconds)."""
    head = f"{'stage':18s} {'p50 ms':>10s} {'p90 ms':>10s} {'p99 ms':>10s} {'min ms':>10s}"
    lines = [head, "-" * len(head)]
    for name, s in stages.items():
        lines.append(f"{name:18s} {s['p50']:10.1f} {s['p90']:10.1f} {s['p99']:10.1f} "
                     f"{s['min']:10.1f}")
    return "\n".join(lines)


# --- transfer counters (engines that have them) ------------------------------------------
def _as_counts(stats: Any) -> dict[str, float]:
    """Numeric fields of whatever ``engine.transfer_stats()`` returns (mapping/dataclass/obj)."""
    if isinstance(stats, Mapping):
        raw = dict(stats)
    elif dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        raw = dataclasses.asdict(stats)
    else:
        raw = {k: getattr(stats, k) for k in dir(stats) if not k.startswith("_")}
    return {k: float(v) for k, v in raw.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def transfer_snapshot(engines: Mapping[str, Any]) -> dict[str, dict[str, float]] | None:
    """``transfer_stats()`` of every engine that offers it; None when none does."""
    out = {}
    for name, engine in engines.items():
        getter = getattr(engine, "transfer_stats", None)
        if callable(getter):
            out[name] = _as_counts(getter())
    return out or None


def transfer_sources(predictor: Any) -> dict[str, Any]:
    """What to read transfer counters from: each fold engine and SELECTION engine; the
    segmenter as a whole when its folds run as fixed-shape networks (those count nothing
    themselves: the device window's helper sessions count every byte)."""
    seg = predictor.segmenter
    out: dict[str, Any] = ({"segmentation": seg} if seg.fixed_shape_network else
                           {f"segmentation.fold{i}": e for i, e in enumerate(seg.engines)})
    out.update({f"selection.{k}": e for k, e in predictor.scorer.engines.items()})
    return out


def transfer_delta(before: dict[str, dict[str, float]] | None,
                   after: dict[str, dict[str, float]] | None, runs: int
                   ) -> dict[str, dict[str, float]] | None:
    """Counters per study: (after - before) / runs, per engine and field."""
    if before is None or after is None or runs < 1:
        return None
    return {
        eng: {k: (v - before.get(eng, {}).get(k, 0.0)) / runs for k, v in fields.items()}
        for eng, fields in after.items()
    }


# --- the study -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Study:
    """The two phase files, the clinical record, and what they are."""

    arterial: Path
    portal: Path
    clinical: Any
    description: str


def synthetic_study(shape_zyx: tuple[int, int, int], spacing_zyx: tuple[float, float, float],
                    folder: Path, seed: int = 11) -> Study:
    """A seeded synthetic two-phase phantom written as NIfTI (so ``read`` is timed too)."""
    from hccatom.ct_io import write_volume
    from hccatom.synthetic import ScanSpec, draw_cohort, generate_patient

    member = draw_cohort("TACE", 1, seed=seed).patients[0]
    scan = ScanSpec(shape_yx=(shape_zyx[1], shape_zyx[2]),
                    spacing_yx_mm=(spacing_zyx[1], spacing_zyx[2]),
                    slice_thickness_mm=spacing_zyx[0], n_slices=shape_zyx[0],
                    noise_hu=15.0, blur_px=0.8, max_shift_mm=4.0)
    patient = generate_patient(member.seed, scan, member.features)
    art = write_volume(patient.arterial, folder / "arterial.nii.gz")
    por = write_volume(patient.portal, folder / "portal.nii.gz")
    desc = (f"synthetic phantom (seed {seed}) {shape_zyx[1]}x{shape_zyx[2]}x{shape_zyx[0]} "
            f"at {spacing_zyx[1]}x{spacing_zyx[2]}x{spacing_zyx[0]} mm")
    return Study(art, por, member.clinical, desc)


# --- progress --------------------------------------------------------------------------
class Progress:
    """One line per step on stderr (always: a benchmark runs long and unattended)."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            self.stream.write(f"[bench {time.perf_counter() - self.t0:7.1f} s] {message}\n")
            self.stream.flush()


# --- the benchmark ---------------------------------------------------------------------
def _device_kind(providers: Sequence[str]) -> str:
    if "TensorrtExecutionProvider" in providers or "CUDAExecutionProvider" in providers:
        return "gpu"
    return "cpu"


def _segmentation_work(predictor: Any, study: Study, progress: Progress
                       ) -> dict[str, Any]:
    """Network evaluations per phase and FLOPs per evaluation of the bundle's network."""
    from hccatom.chain import prepare_phase, segmentation_input

    seg = predictor.segmenter
    spec = seg.spec
    variants = 1 + (2 ** len(seg.mirror_axes) - 1)
    per_phase: dict[str, dict[str, Any]] = {}
    for name, path in (("arterial", study.arterial), ("portal", study.portal)):
        vol = segmentation_input(prepare_phase(path, predictor.preprocessing),
                                 predictor.preprocessing)
        tiles, evals = segmentation_evaluations(
            vol.shape, vol.spacing, target_spacing=spec.target_spacing_mm,
            transpose_forward=spec.transpose_forward, patch_size=spec.patch_size,
            step_size=seg.step_size, mirror_variants=variants, folds=len(seg.engines),
        )
        per_phase[name] = {"tiles": tiles, "evaluations": evals,
                           "input_shape_zyx": list(vol.shape)}
    # count on the fp32 graph (an fp16 twin adds Casts and counts the same arithmetic)
    loaded = getattr(seg.engines[0], "path", None)
    model = loaded.with_name(spec.folds[0].onnx) if isinstance(loaded, Path) else None
    flops_per_eval = None
    if model is not None and model.is_file():
        progress("counting FLOPs of one network evaluation (profiled CPU run)")
        feeds = {spec.input_name: np.zeros((1, spec.num_input_channels, *spec.patch_size),
                                           np.float32)}
        try:
            flops_per_eval = network_flops(model, feeds)
        except Exception as exc:  # an fp16 graph on an old ORT, etc.: report, do not fail
            progress(f"FLOP count failed ({type(exc).__name__}: {exc}); floor not computed")
    total_evals = sum(int(p["evaluations"]) for p in per_phase.values())
    return {
        "phases": per_phase,
        "mirror_variants": variants,
        "folds": len(seg.engines),
        "patch_size": list(spec.patch_size),
        "step_size": seg.step_size,
        "flops_per_evaluation": flops_per_eval,
        "tflop_both_phases": (None if flops_per_eval is None
                              else total_evals * flops_per_eval / 1e12),
    }


def run_bench(
    bundle: Path | str,
    *,
    device: str = "auto",
    study: Study,
    repeats: int = 5,
    warmup: int = 1,
    precision: str | None = None,
    threads: int | None = None,
    mirroring: bool | None = None,
    peak: float | None = None,
    count_flops: bool = True,
    compare_nnunet: Path | None = None,
    progress: Progress | None = None,
    cuda_graphs: bool = False,
    stage_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Time ``recommend`` on ``study``; return the full result (what ``--json`` writes).
    ``stage_progress`` receives each run's stage and tile events (the CLI shows them, so
    a long run is never silent)."""
    from hccatom.predictor import CTStudy, Predictor

    if repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise InputError(f"--warmup must be >= 0, got {warmup}")
    say = progress or Progress()
    if compare_nnunet is not None:
        _reference_timer()  # fail before the long runs when the export extra is missing
    say(f"loading bundle {bundle} (device {device}"
        + (f", precision {precision}" if precision else "") + ")")
    kwargs: dict[str, Any] = {"device": device, "threads": threads, "mirroring": mirroring}
    if precision is not None:
        kwargs["precision"] = precision
    if cuda_graphs:
        from hccatom.engines.providers import CudaOptions

        kwargs["cuda_options"] = CudaOptions(enable_cuda_graph=True)
    t0 = time.perf_counter()
    predictor = Predictor.from_bundle(bundle, **kwargs)
    load_ms = (time.perf_counter() - t0) * 1000.0
    engines = transfer_sources(predictor)
    ct = CTStudy(arterial=study.arterial, portal=study.portal)
    timings: list[dict[str, float]] = []
    rec = None
    with predictor:
        for i in range(warmup):
            t = time.perf_counter()
            predictor.recommend(ct, study.clinical, progress=stage_progress)
            say(f"warm-up {i + 1}/{warmup}: {(time.perf_counter() - t) * 1000:.0f} ms")
        before = transfer_snapshot(engines)
        gpu = _device_kind(predictor.segmenter.providers) == "gpu"
        with PeakSampler(gpu=gpu) as mem:
            for i in range(repeats):
                rec = predictor.recommend(ct, study.clinical, progress=stage_progress)
                timings.append(dict(rec.timings_ms))
                say(f"run {i + 1}/{repeats}: total {rec.timings_ms['total']:.0f} ms")
        transfers = transfer_delta(before, transfer_snapshot(engines), repeats)
        assert rec is not None
        seg_providers = list(rec.engine.segmentation)
        work = _segmentation_work(predictor, study, say) if count_flops else None
        precisions = dict(getattr(predictor, "precisions", {}))

    stages = {s: summarise([t[s] for t in timings]) for s in STAGES
              if all(s in t for t in timings)}
    total_p50_s = stages["total"]["p50"] / 1000.0
    kind = _device_kind(seg_providers)
    floor: dict[str, Any] | None = None
    if work is not None and work["tflop_both_phases"] is not None:
        pk = peak_tflops(kind, peak)
        seg_ms = stages["segment_arterial"]["p50"] + stages["segment_portal"]["p50"]
        floor = {
            "tflop": work["tflop_both_phases"],
            "peak_tflops": pk.tflops,
            "peak_source": pk.source,
            "peak_detail": pk.detail,
            "floor_ms": (None if not pk.tflops
                         else work["tflop_both_phases"] / pk.tflops * 1000.0),
            "segmentation_p50_ms_both_phases": seg_ms,
        }
        if floor["floor_ms"]:
            floor["achieved_fraction_of_peak"] = floor["floor_ms"] / seg_ms
    result: dict[str, Any] = {
        "kind": "hccatom-bench",
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "bundle": {"path": str(bundle), "name": predictor.bundle.name,
                   "version": predictor.bundle.version},
        "study": study.description,
        "device": device,
        "precision_requested": precision,
        "engine_precisions": precisions,
        "providers": {"segmentation": seg_providers, "selection": list(rec.engine.selection)},
        "repeats": repeats,
        "warmup": warmup,
        "bundle_load_ms": load_ms,
        "stages_ms": stages,
        "runs_ms": timings,
        "studies_per_minute": 60.0 / total_p50_s if total_p50_s > 0 else None,
        "peak_host_rss_mib": mem.peak_rss_bytes / 2**20,
        "peak_device_memory_mib": mem.device_peak_mib,
        "peak_device_memory_note": (
            "nvidia-smi memory.used above the pre-run baseline (includes ONNX Runtime's "
            "arena)" if mem.device_peak_mib is not None else
            "not measurable: " + ("CPU execution" if not gpu else "no nvidia-smi")
        ),
        "segmentation_runtime": segmentation_runtime(predictor.segmenter, cuda_graphs),
        "transfer_bytes_per_study": transfers,
        "transfer_note": (None if transfers is not None else
                          "these engines do not count host<->device bytes "
                          "(no transfer_stats())"),
        "segmentation_work": work,
        "flop_floor": floor,
        "machine": machine_facts(),
    }
    if compare_nnunet is not None:
        result["nnunet_reference"] = _compare_nnunet(
            compare_nnunet, predictor, study, device=kind, repeats=repeats, warmup=warmup,
            ours=stages, progress=say,
        )
    return result


def segmentation_runtime(segmenter: Any, cuda_graphs_requested: bool) -> dict[str, Any]:
    """Which segmentation path ran: device-resident or host, fixed-shape network, CUDA
    graphs asked for and actually used (only fixed-shape engines on the CUDA provider)."""
    return {
        "device_resident": bool(getattr(segmenter, "device_resident", False)),
        "fixed_shape_network": bool(getattr(segmenter, "fixed_shape_network", False)),
        "cuda_graphs_requested": cuda_graphs_requested,
        "cuda_graphs_used": bool(getattr(segmenter, "cuda_graphs", False)),
    }


def _reference_timer() -> Any:
    """``time_nnunet_predictor`` from the export extra, or a clear error without it."""
    try:
        from hccatom.export.nnunet_reference import time_nnunet_predictor
    except ModuleNotFoundError as exc:
        raise ExtraMissingError(
            f"--compare-nnunet needs the export extra ({exc.name} is not installed): "
            'pip install "hccatom[export]", or leave --compare-nnunet out.'
        ) from exc
    return time_nnunet_predictor


def _compare_nnunet(folder: Path, predictor: Any, study: Study, *, device: str, repeats: int,
                    warmup: int, ours: Mapping[str, Mapping[str, float]], progress: Progress
                    ) -> dict[str, Any]:
    """nnUNetPredictor on the same volumes (export extra), with our/their ratio."""
    time_nnunet_predictor = _reference_timer()
    from hccatom.chain import prepare_phase, segmentation_input

    seg = predictor.segmenter
    volumes = {
        name: segmentation_input(prepare_phase(path, predictor.preprocessing),
                                 predictor.preprocessing)
        for name, path in (("arterial", study.arterial), ("portal", study.portal))
    }
    progress(f"nnUNetPredictor reference on {device} ({repeats} runs per phase)")
    ref = time_nnunet_predictor(
        folder, volumes, device="cuda" if device == "gpu" else "cpu",
        folds=list(seg.folds), step_size=seg.step_size,
        mirroring=bool(seg.mirror_axes), repeats=repeats, warmup=warmup,
    )
    for name in volumes:
        ours_p50 = ours[f"segment_{name}"]["p50"]
        ref["phases"][name]["ratio_reference_over_ours"] = (
            ref["phases"][name]["p50_ms"] / ours_p50 if ours_p50 > 0 else None)
    return ref


# --- CLI -------------------------------------------------------------------------------
def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add the ``bench`` arguments."""
    p.description = __doc__.split("\n\n")[3].replace("\n", " ") if __doc__ else None
    p.add_argument("--bundle", type=Path, default=None,
                   help="bundle directory or .zip (default: the packaged demo bundle)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "tensorrt"), default="auto")
    p.add_argument("--study", choices=("synthetic",), default=None,
                   help="a seeded synthetic phantom (default unless --arterial/--portal)")
    p.add_argument("--arterial", help="arterial phase: DICOM folder or NIfTI/NRRD/MHA file")
    p.add_argument("--portal", help="portal phase: DICOM folder or file")
    p.add_argument("--clinical", type=Path, default=None,
                   help="clinical JSON for --arterial/--portal (default: a synthetic record)")
    p.add_argument("--size", default="512x512x200",
                   help="synthetic study rows x columns x slices (default 512x512x200, at "
                        "0.8 x 0.8 x 1 mm)")
    p.add_argument("--small", action="store_true",
                   help="a small synthetic study (128x128x48 at 3 x 3 x 4 mm) for smoke tests")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="network precision (default: the bundle's choice for the device)")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="run the segmentation network as a CUDA graph (fixed tile batch on "
                        "the device-resident path; the report says whether it was used)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per engine")
    p.add_argument("--no-mirroring", action="store_true",
                   help="segment without test-time mirroring")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak TFLOP/s for the FLOP floor (default: measured on "
                        "the CPU, the vendor table for known GPUs)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count and floor")
    p.add_argument("--compare-nnunet", type=Path, default=None, metavar="MODEL_FOLDER",
                   help="also time nnUNetPredictor on this nnU-Net model folder (export extra)")
    p.add_argument("--json", type=Path, default=None, metavar="OUT",
                   help="write every figure and the machine's facts as JSON")


def _study_from_args(args: argparse.Namespace, tmp: Path) -> Study:
    if (args.arterial is None) != (args.portal is None):
        raise InputError("give both --arterial and --portal, or neither (synthetic study)")
    if args.arterial is not None:
        if args.study == "synthetic":
            raise InputError("--study synthetic and --arterial/--portal exclude each other")
        for name in PHASES:
            if not Path(getattr(args, name)).exists():
                raise InputError(f"--{name} {getattr(args, name)}: no such file or folder")
        if args.clinical is not None:
            from hccatom.clinical import ClinicalVariables

            clinical: Any = ClinicalVariables.from_json(args.clinical)
        else:
            from hccatom.synthetic import draw_cohort

            clinical = draw_cohort("TACE", 1, seed=11).patients[0].clinical
        return Study(Path(args.arterial), Path(args.portal), clinical,
                     f"files {Path(args.arterial).name}, {Path(args.portal).name}")
    if args.small:
        return synthetic_study((48, 128, 128), (4.0, 3.0, 3.0), tmp)
    try:
        shape = parse_size(args.size)
    except ValueError as exc:
        raise InputError(f"--size: {exc}") from exc
    return synthetic_study(shape, DEFAULT_SPACING_ZYX, tmp)


def print_summary(result: Mapping[str, Any], out: TextIO) -> None:
    """The human-readable report."""
    w = out.write
    w(f"hccatom bench: {result['bundle']['name']} {result['bundle']['version']} on "
      f"{result['device']} | {result['study']}\n")
    w(f"providers: segmentation {', '.join(result['providers']['segmentation'])}; "
      f"selection {', '.join(result['providers']['selection'])}\n")
    w(format_table(result["stages_ms"]) + "\n")
    spm = result["studies_per_minute"]
    w(f"studies per minute (1 / p50 total): {spm:.2f}\n" if spm else "")
    w(f"peak host RSS: {result['peak_host_rss_mib']:.0f} MiB; peak device memory: "
      + (f"{result['peak_device_memory_mib']:.0f} MiB\n"
         if result["peak_device_memory_mib"] is not None
         else f"{result['peak_device_memory_note']}\n"))
    rt = result.get("segmentation_runtime")
    if rt:
        w(f"segmentation: {'device-resident' if rt['device_resident'] else 'host'} path; "
          f"CUDA graphs {'used' if rt['cuda_graphs_used'] else 'not used'}"
          + (" (asked for)" if rt["cuda_graphs_requested"] else "")
          + ("; fixed-shape network" if rt["fixed_shape_network"] else "") + "\n")
    tr = result["transfer_bytes_per_study"]
    if tr:
        for eng, fields in tr.items():
            w(f"transfers per study, {eng}: "
              + ", ".join(f"{k} {v:,.0f}" for k, v in fields.items()) + "\n")
    else:
        w(f"host<->device bytes: {result['transfer_note']}\n")
    fl = result.get("flop_floor")
    if fl:
        pk = (f"{fl['peak_tflops']:.2f} TFLOP/s ({fl['peak_source']}: {fl['peak_detail']})"
              if fl["peak_tflops"] else f"unknown ({fl['peak_detail']})")
        w(f"segmentation work: {fl['tflop']:.3f} TFLOP both phases; device peak {pk}\n")
        if fl["floor_ms"]:
            w(f"FLOP floor {fl['floor_ms']:.1f} ms vs measured "
              f"{fl['segmentation_p50_ms_both_phases']:.1f} ms "
              f"({100 * fl['achieved_fraction_of_peak']:.1f} % of peak)\n")
    ref = result.get("nnunet_reference")
    if ref:
        for name, r in ref["phases"].items():
            w(f"nnUNetPredictor segment_{name}: p50 {r['p50_ms']:.1f} ms; reference / ours "
              f"= {r['ratio_reference_over_ours']:.2f}\n")


def run(args: argparse.Namespace) -> int:
    """``hccatom bench``: run, print the table, write JSON."""
    if args.json is not None:
        check_output_file(args.json, "--json")  # before the runs, not after them
    bundle = args.bundle
    if bundle is None:
        from hccatom.demo import demo_bundle_path

        bundle = demo_bundle_path()
    say = Progress(quiet=args.quiet)
    with tempfile.TemporaryDirectory(prefix="hccatom-bench-") as tmp:
        say("preparing the study")
        study = _study_from_args(args, Path(tmp))
        result = run_bench(
            bundle, device=args.device, study=study, repeats=args.repeats,
            warmup=args.warmup, precision=args.precision, threads=args.threads,
            mirroring=False if args.no_mirroring else None, peak=args.peak_tflops,
            count_flops=not args.no_flops, compare_nnunet=args.compare_nnunet, progress=say,
            cuda_graphs=args.cuda_graphs, stage_progress=getattr(args, "progress", None),
        )
    print_summary(result, sys.stdout)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"JSON written to {args.json}")
    return 0
