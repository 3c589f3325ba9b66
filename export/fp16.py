"""Half-precision (fp16) network graphs beside the fp32 ones, gated by parity (build time).

nnU-Net runs its network under fp16 autocast on CUDA; the fp16 graph lets ONNX Runtime do
the same. :func:`convert_graph_fp16` converts an exported fp32 graph with ONNX Runtime's
float16 converter (``keep_io_types=True``: inputs and outputs stay float32, so callers and
the segmentation pipeline are unchanged; casts sit at the graph's edges). The graph is kept
only if it passes a gate against its fp32 twin:

* segmentation (:func:`segmentation_fp16_parity`): whole sliding-window segmentations with
  the fp32 and the fp16 folds on real volumes: label agreement >= 99.9 % and Dice >= 0.99
  per label with >= 1000 voxels;
* SELECTION (:func:`selection_fp16_parity`): scores within 1e-3 on seeded inputs.

A failing gate deletes the fp16 graph and raises :class:`Fp16ParityError` carrying the
report, which is written next to the graphs either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hccatom.engines import OnnxRuntimeEngine
from hccatom.errors import ExportError, ParityError
from hccatom.volume import Volume

Precision = Literal["fp32", "fp16", "both"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "both")

LABEL_AGREEMENT_MIN = 0.999
DICE_MIN = 0.99
DICE_MIN_VOXELS = 1000
SCORE_TOLERANCE = 1e-3
FP16_SUFFIX = ".fp16.onnx"


class Fp16ParityError(ParityError):
    """The fp16 graph differs too much from fp32; ``report`` holds the figures."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def wants_fp16(precision: str) -> bool:
    """Whether an export precision option asks for fp16 graphs (``fp16`` or ``both``).

    The fp32 graph is always written too: it is the parity reference, the CPU default and
    the fallback; ``fp16`` and ``both`` therefore mean the same files.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision != "fp32"


def fp16_path(fp32_path: Path) -> Path:
    """``fold_0.onnx`` -> ``fold_0.fp16.onnx`` (beside it)."""
    return fp32_path.with_name(fp32_path.name.removesuffix(".onnx") + FP16_SUFFIX)


def convert_graph_fp16(src: Path, dst: Path) -> Path:
    """Write the fp16 twin of the fp32 ONNX graph ``src`` to ``dst`` (fp32 inputs/outputs).

    Weights larger than protobuf's 2 GiB limit go to an external data file ``dst.data``.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))  # loads external data too
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    big = half.ByteSize() > 1_900_000_000
    onnx.save_model(half, str(dst), save_as_external_data=big, all_tensors_to_one_file=True,
                    location=dst.name + ".data" if big else None)
    return dst


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    inter = float(np.logical_and(a, b).sum())
    denom = float(a.sum() + b.sum())
    return 1.0 if denom == 0 else 2.0 * inter / denom


def label_agreement(ref: np.ndarray, got: np.ndarray, labels: Sequence[int]) -> dict[str, Any]:
    """Agreement and per-label Dice (labels with >= ``DICE_MIN_VOXELS`` in either map)."""
    dice: dict[str, float] = {}
    for lab in labels:
        a, b = ref == lab, got == lab
        if max(int(a.sum()), int(b.sum())) >= DICE_MIN_VOXELS:
            dice[str(lab)] = _dice(a, b)
    return {"agreement": float(np.mean(ref == got)), "dice": dice,
            "voxels": int(ref.size)}


def segmentation_fp16_parity(
    spec: Any,
    fold_pairs: Mapping[Any, tuple[Path, Path]],
    volumes: Mapping[str, Volume],
    *,
    mirroring: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Segment ``volumes`` with the fp32 folds and the fp16 folds; compare the label maps.

    ``spec``: the export's :class:`~hccatom.segmentation.SegmentationSpec`;
    ``fold_pairs``: fold -> (fp32 graph, fp16 graph). Runs the runtime's own ``Segmenter``
    (CPU provider) so the gate covers the whole path, Gaussian weighting and argmax included.
    """
    from hccatom.segmentation import Segmenter

    folds = [f.fold for f in spec.folds if f.fold in fold_pairs]
    engines32 = [OnnxRuntimeEngine(fold_pairs[f][0], device="cpu", threads=threads)
                 for f in folds]
    engines16 = [OnnxRuntimeEngine(fold_pairs[f][1], device="cpu", threads=threads)
                 for f in folds]
    kw: dict[str, Any] = {"spec": spec, "mirroring": mirroring, "folds": folds,
                          "verify": False}
    seg32 = Segmenter(None, engines=engines32, **kw)
    seg16 = Segmenter(None, engines=engines16, **kw)
    labels = sorted({int(v) for v in spec.labels.channel_to_label})
    cases: dict[str, Any] = {}
    for name, vol in volumes.items():
        ref = seg32.segment(vol).array
        got = seg16.segment(vol).array
        row = label_agreement(ref, got, labels)
        row["passed"] = bool(row["agreement"] >= LABEL_AGREEMENT_MIN
                             and all(d >= DICE_MIN for d in row["dice"].values()))
        cases[name] = row
    return {
        "kind": "fp16-vs-fp32-segmentation",
        "measure": "whole sliding-window segmentation, ONNX Runtime CPU provider, fp16 folds "
                   "vs fp32 folds",
        "gate": {"label_agreement_min": LABEL_AGREEMENT_MIN, "dice_min": DICE_MIN,
                 "dice_min_voxels": DICE_MIN_VOXELS},
        "mirroring": mirroring,
        "folds": [str(f) for f in folds],
        "cases": cases,
        "passed": bool(cases) and all(c["passed"] for c in cases.values()),
    }


def selection_fp16_parity(
    fp32: Path, fp16: Path, make_inputs: Callable[[int, int], dict[str, np.ndarray]],
    *, output: str, batches: Sequence[int] = (1, 4), seed: int = 0,
    tolerance: float | None = None,
) -> dict[str, Any]:
    """Max |score difference| fp16 vs fp32 graph on seeded inputs (CPU provider).

    ``tolerance`` defaults to :data:`SCORE_TOLERANCE` (1e-3)."""
    tolerance = SCORE_TOLERANCE if tolerance is None else tolerance
    e32 = OnnxRuntimeEngine(fp32, device="cpu")
    e16 = OnnxRuntimeEngine(fp16, device="cpu")
    rows = []
    for b in batches:
        feeds = make_inputs(b, seed + b)
        a = e32.run(feeds)[output].astype(np.float64)
        c = e16.run(feeds)[output].astype(np.float64)
        diff = np.abs(a - c)
        rows.append({"batch": b, "max_abs_diff": float(diff.max()),
                     "mean_abs_diff": float(diff.mean()),
                     "finite": bool(np.isfinite(c).all())})
    worst = max(r["max_abs_diff"] for r in rows)
    return {
        "kind": "fp16-vs-fp32-selection",
        "compared_output": output,
        "tolerance": tolerance,
        "max_abs_diff": worst,
        "batches": rows,
        "passed": bool(worst <= tolerance and all(r["finite"] for r in rows)),
    }


def refuse(graphs: Sequence[Path], report: dict[str, Any], where: Path, what: str) -> None:
    """Delete the fp16 ``graphs`` and raise :class:`Fp16ParityError` with ``report``."""
    for g in graphs:
        for f in (g, g.with_name(g.name + ".data")):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
    raise Fp16ParityError(
        f"the fp16 {what} graph(s) differ too much from fp32 and were not kept (report: "
        f"{where}); export with --precision fp32, or check the network for fp16 overflow",
        report,
    )


def default_parity_volumes(seed: int = 3) -> dict[str, Volume]:
    """A realistic-looking synthetic two-phase study (liver, tumour, vessels, noise, patient
    shift), kept small so that the gate stays quick: 56 x 56 x 30 at 4 x 4 x 5 mm."""
    from hccatom.synthetic import ScanSpec, generate_patient

    scan = ScanSpec(shape_yx=(56, 56), spacing_yx_mm=(4.0, 4.0), slice_thickness_mm=5.0,
                    n_slices=30, max_shift_mm=4.0)
    p = generate_patient(seed, scan)
    return {"synthetic_arterial": p.arterial, "synthetic_portal": p.portal}
