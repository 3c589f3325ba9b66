"""``hccatom explain --checkpoint``: Grad-CAM of a SELECTION checkpoint beside the rollout.

Imported lazily by the CLI (needs torch)::

    hccatom explain --checkpoint tace.pth --cohort TACE --bundle B \\
        --arterial art.nii.gz --portal ven.nii.gz --clinical clinical.json --out DIR

The bundle's own chain makes the two model images and the clinical vectors (so the
checkpoint sees exactly what the bundle's graph sees); Grad-CAM runs on the checkpoint
(:mod:`hccatom.export.selection_gradcam`) and, when the bundle has explain graphs, the
bundle's rollout for the same cohort is put beside it. Writes ``gradcam_<cohort>.json``
(grids, scores) and ``gradcam_<cohort>.png`` (overlays; needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from hccatom.path_checks import check_output_folder
from hccatom.phases import PHASES


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``explain`` arguments to ``parser``."""
    from hccatom.export.selection_sizes import FUSIONS, SIZES

    parser.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                        help="the trained SELECTION checkpoint (.pth/.pt/.safetensors)")
    parser.add_argument("--cohort", type=str.upper, required=True,
                        choices=("TACE", "HAIC", "TC", "HC"), help="which model it is")
    parser.add_argument("--size", choices=sorted(SIZES), default="paper")
    parser.add_argument("--fusion", choices=FUSIONS, default="paper")
    parser.add_argument("--bundle", type=Path, required=True,
                        help="bundle whose preprocessing makes the model images")
    parser.add_argument("--arterial", required=True, help="arterial phase (file or folder)")
    parser.add_argument("--portal", required=True, help="portal phase (file or folder)")
    parser.add_argument("--clinical", type=Path, required=True, help="clinical JSON")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR")


def run(args: argparse.Namespace) -> int:
    """Compute and write; returns 0."""
    import torch

    from hccatom.chain import encode_clinical
    from hccatom.engines.providers import file_sha256
    from hccatom.explain.visual import geometry_of
    from hccatom.export.checkpoint import load_selection
    from hccatom.export.selection_gradcam import grad_cam
    from hccatom.predictor import CTStudy, Predictor, _Timer

    check_output_folder(args.out, "--out")  # before the chain and Grad-CAM run
    with Predictor.from_bundle(args.bundle, device="cpu") as predictor:
        scores, images, _, _, cv = predictor._score(
            CTStudy(arterial=args.arterial, portal=args.portal), args.clinical, _Timer(None))
        sel = predictor.bundle.manifest.selection
        clin = encode_clinical(cv, sel.clinical_encoding, sel)
        names = {sel.io.lab: "lab", sel.io.demo: "demo", sel.io.iv: "iv"}
        inputs = {"arterial": torch.from_numpy(images["arterial"].image[None]),
                  "portal": torch.from_numpy(images["portal"].image[None]),
                  **{names[k]: torch.from_numpy(v) for k, v in clin.items()}}
        model = load_selection(args.checkpoint, size=args.size, fusion=args.fusion)
        cam = grad_cam(model, inputs)[0]
        with torch.no_grad():
            ckpt_score = float(torch.sigmoid(model(**inputs)).reshape(-1)[0])
        rollout: dict[str, Any] | None = None
        if predictor.explainer.available:
            feeds = predictor.scorer.feeds(images["arterial"].image, images["portal"].image,
                                           clin)
            geometry = {n: geometry_of(img, predictor.preprocessing)
                        for n, img in images.items()}
            rel = predictor.explainer.relevance(feeds, images, geometry)[args.cohort]
            rollout = {p: r.grid for p, r in rel.phases.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gradcam_{args.cohort.lower()}"
    record = {
        "cohort": args.cohort, "checkpoint_sha256": file_sha256(args.checkpoint),
        "checkpoint_score": ckpt_score, "bundle_score": scores[args.cohort],
        "gradcam": {"arterial": cam[0].tolist(), "portal": cam[1].tolist()},
        "rollout": rollout,
        "note": "Grad-CAM: last block's image tokens, max-scaled per phase; rollout: share of "
                "the total relevance (docs/explanations.md). Both describe the model, not "
                "the patient.",
    }
    (args.out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n",
                                           encoding="utf-8")
    print(f"Grad-CAM of {args.cohort}: checkpoint score {ckpt_score:.4f}, bundle score "
          f"{scores[args.cohort]:.4f}; written {args.out / (stem + '.json')}")
    try:
        _figure(images, cam, rollout, args.out / f"{stem}.png", args.cohort)
        print(f"figure {args.out / (stem + '.png')}")
    except ModuleNotFoundError:
        print("(no figure: matplotlib is not installed; pip install 'hccatom[report]')")
    return 0


def _figure(images: Any, cam: np.ndarray, rollout: dict[str, Any] | None, path: Path,
            cohort: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from hccatom.explain.geometry import grid_to_model_image

    rows = 2 if rollout is not None else 1
    fig = Figure(figsize=(6, 3 * rows))
    FigureCanvasAgg(fig)
    for k, phase in enumerate(PHASES):
        base = images[phase].image[0]
        maps = [("Grad-CAM", cam[k])] + ([("rollout", np.asarray(rollout[phase]))]
                                         if rollout is not None else [])
        for r, (title, grid) in enumerate(maps):
            ax = fig.add_subplot(rows, 2, r * 2 + k + 1)
            heat = grid_to_model_image(grid, base.shape[0])
            ax.imshow(base, cmap="gray")
            ax.imshow(heat / (heat.max() or 1.0), cmap="inferno", alpha=0.45, vmin=0, vmax=1)
            ax.set_title(f"{cohort} {phase}: {title}", fontsize=8)
            ax.set_axis_off()
    fig.savefig(path, dpi=120)
