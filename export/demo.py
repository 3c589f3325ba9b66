"""Build the demo bundle from synthetic data only (``hccatom demo build``; build time).

Honest by construction: every model in the demo bundle is trained here, from a seed, on
:mod:`hccatom.synthetic` phantoms and cohorts. They are NOT the paper's models and say
nothing about patients; the manifest's provenance says so and records the figures.

Stages (each prints its progress and figures):

1. segmentation: synthetic arterial and portal studies -> nnU-Net raw dataset -> nnU-Net's
   own planning, preprocessing and a short CPU training of a reduced 3d_fullres plan
   (:mod:`hccatom.export.nnunet_train`, in a fresh process) -> ONNX through the nnU-Net
   export path; Dice of liver and tumour on held-out synthetic patients with the runtime
   :class:`hccatom.Segmenter`;
2. SELECTION: per cohort (TACE, HAIC, TC, HC) a synthetic cohort drawn from Table 1
   marginals; its images made by hccatom's own preprocessing chain (z resampling, slice
   pick, 224 mm liver box, model image) on the ground-truth labels; a small SELECTION
   network trained with torch; MSS = median score on its own training set; held-out AUC
   next to the oracle AUC of the known outcome model; ONNX through the SELECTION exporter;
3. bundle: :func:`hccatom.bundle.writer.build_bundle` with ``synthetic=True`` and
   provenance that records the seed and every figure, signed with the public demo key.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hccatom.chain import phase_image as chain_phase_image
from hccatom.chain import prepare_phase
from hccatom.clinical import ClinicalVariables
from hccatom.clinical_encoding import ClinicalEncoding
from hccatom.preprocess import PreprocessSpec, resample_z
from hccatom.safety import SafetyLimits, training_population
from hccatom.segmentation.spec import SPEC_FILENAME
from hccatom.synthetic import COHORTS, ScanSpec, auc, draw_cohort, generate_patient, oracle_auc
from hccatom.synthetic.cohort import CohortPatient
from hccatom.volume import Volume

Log = Callable[[str], None]

DEMO_BUNDLE_NAME = "hccatom-demo-synthetic"
NOT_THE_PAPER = (
    "SYNTHETIC DEMO: every model here was trained by `hccatom demo build` on synthetic "
    "phantoms and cohorts (hccatom.synthetic). These are NOT the SELECTION paper's models, "
    "carry no clinical meaning and are for research and demonstration use only."
)
SELECTION_STAGE_FILE = "selection_stage.json"
SEG_THREADS_FILE = "nnunet_threads.txt"  # written when the SELECTION stage frees its core
SEG_DATASET_ID = 611
SEG_DATASET_NAME = "HccatomDemoSynth"
CLINICAL_LOG_FIELDS = (
    "afp_ng_per_ml", "alt_u_per_l", "ast_u_per_l", "total_bilirubin_umol_per_l",
)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and schedules of a demo build (defaults: < 30 min on 2 CPU cores)."""

    seed: int = 2024
    scan: ScanSpec = field(default_factory=ScanSpec.demo)
    seg_train_patients: int = 24
    seg_test_patients: int = 6
    seg_epochs: int = 90
    seg_iterations: int = 25
    seg_patch: tuple[int, int, int] = (24, 72, 72)
    seg_spacing_mm: tuple[float, float, float] = (4.0, 4.0, 4.0)
    seg_features: tuple[int, ...] = (8, 16, 32, 64)
    seg_augmentation: bool = False  # nnU-Net's NoDA trainer: fast convergence, no mirroring
    sel_train: int = 400
    sel_test: int = 300
    sel_epochs: int = 40
    sel_lr: float = 3e-3
    sel_batch: int = 16
    sel_hidden: int = 64
    sel_layers: int = 4
    sel_heads: int = 4
    sel_mlp: int = 128
    sel_patch_px: int = 32
    sel_slab_slices: int = 12
    threads: int = 1  # per stage while nnU-Net and SELECTION train side by side (2 cores)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view for the manifest."""
        d = asdict(self)
        d["scan"] = asdict(self.scan)
        return d


@dataclass
class DemoFigures:
    """What the build measured (printed and recorded in the manifest)."""

    seed: int
    dice_liver: list[float] = field(default_factory=list)
    dice_tumour: list[float] = field(default_factory=list)
    selection: dict[str, dict[str, Any]] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    reused_stages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary with means."""
        return {
            "seed": self.seed,
            "segmentation_dice_heldout": {
                "liver_mean": float(np.mean(self.dice_liver)) if self.dice_liver else None,
                "tumour_mean": float(np.mean(self.dice_tumour)) if self.dice_tumour else None,
                "liver_per_case": [round(d, 4) for d in self.dice_liver],
                "tumour_per_case": [round(d, 4) for d in self.dice_tumour],
                "targets": {"liver": 0.90, "tumour": 0.70},
            },
            "selection_heldout": self.selection,
            "selection_target": "held-out AUC >= 0.9 x oracle AUC",
            "thresholds_mss": self.thresholds,
            "timings_s": {k: round(v, 1) for k, v in self.timings_s.items()},
            "reused_stages": list(self.reused_stages),
        }


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * float(np.logical_and(p, t).sum()) / denom


# --- 1. segmentation -------------------------------------------------------------------
def _seg_scan(cfg: DemoConfig, rng: np.random.Generator) -> ScanSpec:
    """Vary the demo geometry a little so the model does not learn one grid."""
    px = float(rng.uniform(2.7, 3.3))
    thick = float(rng.choice([3.5, 4.0, 5.0]))  # z stays the coarsest axis
    extent = cfg.scan.n_slices * cfg.scan.slice_thickness_mm
    return replace(cfg.scan, spacing_yx_mm=(px, px), slice_thickness_mm=thick,
                   n_slices=round(extent / thick), noise_hu=float(rng.uniform(8.0, 18.0)))


def segmentation_cases(cfg: DemoConfig, n: int, offset: int) -> list[tuple[str, Volume, Volume]]:
    """Synthetic (case id, CT, labels): both phases of ``n`` patients, seeded by ``cfg``."""
    rng = np.random.default_rng([cfg.seed, offset, 1])
    out = []
    for i in range(n):
        p = generate_patient(int(rng.integers(0, 2**31 - 1)), _seg_scan(cfg, rng))
        out.append((f"synth_{offset + i:04d}a", p.arterial, p.arterial_labels))
        out.append((f"synth_{offset + i:04d}p", p.portal, p.portal_labels))
    return out


@dataclass
class SegmentationTraining:
    """nnU-Net training running in its own process (see :func:`start_segmentation`)."""

    process: subprocess.Popen[bytes]
    log_file: Path
    model_folder: Path
    started: float


def start_segmentation(cfg: DemoConfig, work: Path, log: Log) -> SegmentationTraining:
    """Write the raw dataset and start nnU-Net's plan/preprocess/train in a fresh process.

    It runs with ``cfg.threads`` torch threads beside the SELECTION stage (the other core);
    :func:`finish_segmentation` waits for it and exports the model.
    """
    from hccatom.export.nnunet_train import (
        CONFIGURATION,
        PLANS_NAME,
        PlanOverrides,
        TrainConfig,
        write_raw_dataset,
    )

    nn_root = work / "nnunet"
    raw = nn_root / "raw"
    t0 = time.time()
    cases = segmentation_cases(cfg, cfg.seg_train_patients, 0)
    write_raw_dataset(raw, SEG_DATASET_ID, SEG_DATASET_NAME, cases)
    log(f"[seg] wrote {len(cases)} synthetic training volumes in {time.time() - t0:.0f} s")
    strides = ((1, 1, 1),) + ((1, 2, 2),) + ((2, 2, 2),) * (len(cfg.seg_features) - 2)
    tc = TrainConfig(
        workspace=str(nn_root), dataset_id=SEG_DATASET_ID, dataset_name=SEG_DATASET_NAME,
        fold=0, epochs=cfg.seg_epochs, iterations_per_epoch=cfg.seg_iterations,
        threads=cfg.threads, seed=cfg.seed,
        overrides=PlanOverrides(patch_size=cfg.seg_patch, features_per_stage=cfg.seg_features,
                                strides=strides, batch_size=2,
                                spacing_mm=cfg.seg_spacing_mm),
        out_model_folder=str(work / "seg_model"), augmentation=cfg.seg_augmentation,
        threads_file=str(work / SEG_THREADS_FILE),
    )
    (work / SEG_THREADS_FILE).unlink(missing_ok=True)
    conf = work / "nnunet_train.json"
    tc.to_json(conf)
    log_file = work / "nnunet_train.log"
    log(f"[seg] nnU-Net plan/preprocess/train ({cfg.seg_epochs} x {cfg.seg_iterations} "
        f"iterations) in a separate process; its output goes to {log_file}")
    with log_file.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hccatom.export.nnunet_train", str(conf)],
            stdout=sink, stderr=subprocess.STDOUT,
        )
    folder = work / "seg_model" / f"{tc.trainer_name}__{PLANS_NAME}__{CONFIGURATION}"
    return SegmentationTraining(proc, log_file, folder, time.time())


def hand_over_cores(run: SegmentationTraining, work: Path, threads: int, log: Log) -> None:
    """Let the training process use ``threads`` torch threads from its next epoch on (the
    SELECTION stage, which shared the machine, is done)."""
    if run.process.poll() is None:
        (work / SEG_THREADS_FILE).write_text(str(threads))
        log(f"[seg] SELECTION done: nnU-Net continues with {threads} threads")


def _last_epoch_line(log_file: Path) -> str:
    lines = [ln for ln in log_file.read_text(errors="replace").splitlines() if "Epoch " in ln]
    return lines[-1].split("Epoch ", 1)[-1].strip() if lines else "starting"


def finish_segmentation(run: SegmentationTraining, work: Path, log: Log, seed: int,
                        poll_s: float = 60.0) -> Path:
    """Wait for the training process (logging its epoch now and then), export ONNX + spec."""
    from hccatom.export.nnunet_export import export_nnunet

    while True:
        try:
            run.process.wait(timeout=poll_s)
            break
        except subprocess.TimeoutExpired:
            log(f"[seg] training: epoch {_last_epoch_line(run.log_file)} "
                f"({time.time() - run.started:.0f} s)")
    if run.process.returncode != 0:
        tail = run.log_file.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"nnU-Net training failed; see {run.log_file}:\n{tail}")
    log(f"[seg] trained in {time.time() - run.started:.0f} s")
    export_dir = work / "seg_export"
    # the demo model is trained on raw-HU phantoms: recorded, not defaulted
    export_nnunet(run.model_folder, export_dir, folds=[0], seed=seed,
                  window_before_segmentation=False)
    log(f"[seg] exported ONNX + spec to {export_dir}")
    return export_dir


def evaluate_segmentation(cfg: DemoConfig, export_dir: Path, figures: DemoFigures,
                          log: Log) -> None:
    """Dice on held-out synthetic patients, with the runtime Segmenter (ONNX Runtime)."""
    from hccatom.segmentation import Segmenter

    seg = Segmenter(export_dir, device="cpu", threads=cfg.threads)
    for case_id, ct, lab in segmentation_cases(cfg, cfg.seg_test_patients, 10_000):
        pred = seg.segment(ct).array
        truth = lab.array
        dl = dice(pred > 0, truth > 0)  # the organ: liver including tumour
        dt = dice(pred == 2, truth == 2)
        figures.dice_liver.append(dl)
        figures.dice_tumour.append(dt)
        log(f"[seg] held-out {case_id}: Dice liver {dl:.3f}, tumour {dt:.3f}")
    log(f"[seg] held-out mean Dice: liver {np.mean(figures.dice_liver):.3f} (target >= 0.90), "
        f"tumour {np.mean(figures.dice_tumour):.3f} (target >= 0.70)")


# --- 2. SELECTION ----------------------------------------------------------------------
def phase_image_plane(ct: Volume, labels: Volume, spec: PreprocessSpec) -> np.ndarray:
    """One phase through the Predictor's own chain (:mod:`hccatom.chain`): z resample,
    slice pick, liver box, model image - here on the ground-truth labels.

    Returns channel 0 of the (3, H, W) model image (the three channels are identical).
    """
    ct1 = prepare_phase(ct, spec)
    lab1 = resample_z(labels, spec.slice_thickness_mm, order=0)
    image: np.ndarray = chain_phase_image(ct1, lab1, spec).image[0]
    return image


def cohort_images(patients: Sequence[CohortPatient], scan: ScanSpec,
                  spec: PreprocessSpec) -> np.ndarray:
    """(N, 2, H, W) float32: arterial and portal model images of each cohort patient."""
    out = np.empty((len(patients), 2, spec.image_size_px, spec.image_size_px), np.float32)
    for i, p in enumerate(patients):
        study = generate_patient(p.seed, scan, p.features)
        out[i, 0] = phase_image_plane(study.arterial, study.arterial_labels, spec)
        out[i, 1] = phase_image_plane(study.portal, study.portal_labels, spec)
    return out


def _encode(enc: ClinicalEncoding, clinicals: Sequence[ClinicalVariables]) -> dict[str, Any]:
    b = enc.encode_batch(list(clinicals))
    return {k: np.asarray(v, np.float32).reshape(len(clinicals), -1) for k, v in b.items()}


def _selection_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The config entries the SELECTION stage depends on (for resuming a work dir)."""
    picked = {k: v for k, v in config.items()
              if k in ("seed", "scan", "threads") or k.startswith("sel_")}
    out: dict[str, Any] = json.loads(json.dumps(picked))  # tuples -> lists, as stored
    return out


def train_selection_model(
    images: np.ndarray, clin: dict[str, np.ndarray], y: np.ndarray, cfg: DemoConfig,
    seed: int, log: Log, name: str,
) -> Any:
    """Train one small SELECTION network (BCE, AdamW, cosine schedule); returns it in eval."""
    import torch

    from hccatom.export.selection_model import SelectionModel, SelectionSize, init_random

    torch.manual_seed(seed)
    size = SelectionSize("demo", hidden=cfg.sel_hidden, layers=cfg.sel_layers,
                         heads=cfg.sel_heads, mlp=cfg.sel_mlp, image_size=images.shape[-1],
                         patch=cfg.sel_patch_px)
    model = SelectionModel(size, fusion="paper")
    init_random(model, seed=seed)
    x_img = torch.from_numpy(images)
    x_clin = {k: torch.from_numpy(v) for k, v in clin.items()}
    target = torch.from_numpy(y.astype(np.float32))
    n = len(y)
    bs = cfg.sel_batch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.sel_lr, weight_decay=0.05)
    steps_per_epoch = (n + bs - 1) // bs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.sel_lr, total_steps=cfg.sel_epochs
                                                * steps_per_epoch, pct_start=0.15)
    # weight averaging over the last 30% of epochs (a cheap, well-known regulariser);
    # created before the dropout hook so the averaged copy carries no hook
    averaged = torch.optim.swa_utils.AveragedModel(model)
    swa_start = int(0.7 * cfg.sel_epochs)
    hook = model.transformer.embeddings.register_forward_hook(_embedding_dropout)
    pos = float(target.mean())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - pos) / max(pos, 1e-3)))
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(cfg.sel_epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(0, n, bs):
            idx = order[s:s + bs]
            batch = _augment(x_img[idx], gen)
            art = batch[:, 0:1].expand(-1, 3, -1, -1)
            por = batch[:, 1:2].expand(-1, 3, -1, -1)
            logit = model(art, por, x_clin["lab"][idx], x_clin["demo"][idx], x_clin["iv"][idx])
            loss = loss_fn(logit[:, 0], target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if epoch >= swa_start:
            averaged.update_parameters(model)
        if epoch % 10 == 9 or epoch == cfg.sel_epochs - 1:
            log(f"[sel {name}] epoch {epoch + 1}/{cfg.sel_epochs} loss {total / n:.4f}")
    hook.remove()  # training-only regularisation; the exported graph has none
    final = averaged.module  # same architecture; no batch norm, so nothing to recompute
    return final.eval()


def _embedding_dropout(module: Any, inputs: Any, output: Any) -> Any:
    """Training-time dropout on image (0.3) and clinical (0.1) tokens (a forward hook)."""
    from torch.nn.functional import dropout

    image, text = output
    return (dropout(image, 0.3, module.training), dropout(text, 0.1, module.training))


def _augment(images: Any, gen: Any) -> Any:
    """Small random shifts (both phases together) and intensity jitter per phase."""
    import torch

    dy, dx = (int(v) for v in torch.randint(-8, 9, (2,), generator=gen))
    out = torch.roll(images, shifts=(dy, dx), dims=(2, 3))
    scale = 1.0 + 0.05 * torch.randn(images.shape[0], 2, 1, 1, generator=gen)
    return out * scale + 0.03 * torch.randn(out.shape, generator=gen)


def predict_scores(model: Any, images: np.ndarray, clin: dict[str, np.ndarray]) -> np.ndarray:
    """sigmoid(logit) per patient, batched, no grad."""
    import torch

    out = []
    with torch.no_grad():
        for s in range(0, len(images), 64):
            x = torch.from_numpy(images[s:s + 64])
            logit = model(x[:, 0:1].expand(-1, 3, -1, -1), x[:, 1:2].expand(-1, 3, -1, -1),
                          *(torch.from_numpy(clin[k][s:s + 64]) for k in ("lab", "demo", "iv")))
            out.append(torch.sigmoid(logit[:, 0]).numpy())
    return np.concatenate(out).astype(np.float64)


def build_selection(cfg: DemoConfig, work: Path, spec: PreprocessSpec, figures: DemoFigures,
                    log: Log) -> tuple[dict[str, Path], ClinicalEncoding]:
    """Draw cohorts, make images, fit the encoding, train/evaluate/export four models."""
    import torch

    from hccatom.export.selection_onnx import export_selection

    torch.set_num_threads(cfg.threads)
    stage_file = work / SELECTION_STAGE_FILE
    if stage_file.is_file():  # resume: this work dir already holds the SELECTION stage
        done = json.loads(stage_file.read_text())
        if _selection_fields(done.get("config", {})) == _selection_fields(cfg.as_dict()):
            figures.selection.update(done["selection"])
            figures.thresholds.update(done["thresholds"])
            figures.timings_s.update(done["timings_s"])
            log(f"[sel] reusing the SELECTION stage in {work} (same config and seed)")
            figures.reused_stages.append("SELECTION training/export")
            return ({k: Path(v) for k, v in done["exports"].items()},
                    ClinicalEncoding.model_validate(done["encoding"]))
    scan = replace(cfg.scan, n_slices=cfg.sel_slab_slices, centre_on="tumour")
    cohorts = {}
    for k, name in enumerate(COHORTS):
        drawn = draw_cohort(name, cfg.sel_train + cfg.sel_test, seed=cfg.seed * 10 + k)
        cohorts[name] = (drawn.patients[:cfg.sel_train], drawn.patients[cfg.sel_train:])
    train_clin = [p.clinical for tr, _ in cohorts.values() for p in tr]
    enc = ClinicalEncoding.fit_standardise(train_clin, log1p_fields=CLINICAL_LOG_FIELDS)
    enc = enc.model_copy(update={"description": enc.description + " Demo build: synthetic "
                                 "training cohorts (TACE, HAIC, TC, HC pooled)."})
    exports: dict[str, Path] = {}
    for k, name in enumerate(COHORTS):
        t0 = time.time()
        train, test = cohorts[name]
        img_tr = cohort_images(train, scan, spec)
        img_te = cohort_images(test, scan, spec)
        log(f"[sel {name}] {len(train)} + {len(test)} patients through the preprocessing "
            f"chain in {time.time() - t0:.0f} s")
        y_tr = np.array([p.outcome for p in train])
        y_te = np.array([p.outcome for p in test])
        c_tr = _encode(enc, [p.clinical for p in train])
        c_te = _encode(enc, [p.clinical for p in test])
        t1 = time.time()
        model = train_selection_model(img_tr, c_tr, y_tr, cfg, cfg.seed + k, log, name)
        s_tr = predict_scores(model, img_tr, c_tr)
        s_te = predict_scores(model, img_te, c_te)
        mss = float(np.median(s_tr))
        mss = min(max(mss, 1e-4), 1 - 1e-4)
        heldout = auc(s_te, y_te)
        sample_oracle = auc(np.array([p.probability for p in test]), y_te)
        pop_oracle = oracle_auc(name)
        figures.thresholds[name] = round(mss, 6)
        figures.selection[name] = {
            "endpoint": "objective_response" if name in ("TACE", "HAIC") else "one_year_survival",
            "n_train": len(train), "n_test": len(test),
            "train_auc": round(auc(s_tr, y_tr), 4),
            "heldout_auc": round(heldout, 4),
            "oracle_auc_heldout_sample": round(sample_oracle, 4),
            "oracle_auc_population": round(pop_oracle, 4),
            "ratio_to_oracle": round(heldout / sample_oracle, 4),
            "mss": round(mss, 6),
        }
        figures.timings_s[f"selection_{name}"] = time.time() - t0
        log(f"[sel {name}] trained in {time.time() - t1:.0f} s: held-out AUC {heldout:.3f} vs "
            f"oracle {sample_oracle:.3f} on the same patients (population oracle "
            f"{pop_oracle:.3f}); ratio {heldout / sample_oracle:.2f} (target >= 0.90); "
            f"MSS {mss:.4f}")
        out = work / "selection" / name
        export_selection(model, out, name)
        exports[name] = out
        del img_tr, img_te
    stage_file.write_text(json.dumps({
        "config": cfg.as_dict(), "selection": figures.selection,
        "thresholds": figures.thresholds,
        "timings_s": {k: v for k, v in figures.timings_s.items() if k.startswith("selection")},
        "exports": {k: str(v) for k, v in exports.items()},
        "encoding": enc.model_dump(mode="json"),
    }, indent=2))
    return exports, enc


def training_cohort(cfg: DemoConfig) -> list[ClinicalVariables]:
    """The clinical records the four SELECTION models train on (pooled, as drawn above)."""
    return [p.clinical for k, name in enumerate(COHORTS)
            for p in draw_cohort(name, cfg.sel_train + cfg.sel_test,
                                 seed=cfg.seed * 10 + k).patients[:cfg.sel_train]]


def demo_safety_limits(cfg: DemoConfig) -> SafetyLimits:
    """The demo bundle's safety section: default limits, ranges of its training cohort."""
    population = training_population(
        training_cohort(cfg),
        f"Synthetic training cohorts of `hccatom demo build` (TACE, HAIC, TC, HC pooled, "
        f"{cfg.sel_train} each, seed {cfg.seed}), drawn from the paper's Table 1 marginals.")
    return SafetyLimits(training_population=population)


# --- 3. bundle -------------------------------------------------------------------------
def build_demo(out: Path, cfg: DemoConfig | None = None, *, work: Path | None = None,
               log: Log = print, overwrite: bool = True,
               segmentation_export: Path | None = None, note: str = "") -> DemoFigures:
    """Build the whole demo bundle at ``out``; returns the figures it recorded.

    ``segmentation_export``: reuse an existing nnU-Net export folder (skips stage 1's
    training, still measures Dice); ``note`` is recorded in the provenance (say there how
    a reused stage was made). A ``work`` folder resumes: a segmentation export or a
    finished SELECTION stage (same config and seed) found there is reused, not retrained.
    """
    from hccatom.bundle import Provenance
    from hccatom.bundle.signature import DEMO_PRIVATE_KEY_PATH
    from hccatom.bundle.writer import build_bundle

    cfg = cfg or DemoConfig()
    figures = DemoFigures(seed=cfg.seed)
    own_work = work is None
    wdir = Path(tempfile.mkdtemp(prefix="hccatom-demo-")) if work is None else Path(work)
    wdir.mkdir(parents=True, exist_ok=True)
    spec = PreprocessSpec.model_validate({})  # the paper's values
    try:
        log(f"hccatom demo build: seed {cfg.seed}, work dir {wdir}")
        log(NOT_THE_PAPER)
        t0 = time.time()
        seg_dir = segmentation_export
        if seg_dir is None and (wdir / "seg_export" / SPEC_FILENAME).is_file():
            seg_dir = wdir / "seg_export"
            log(f"[seg] reusing the segmentation export in {seg_dir}")
        training: SegmentationTraining | None = None
        if seg_dir is not None:
            figures.reused_stages.append("segmentation training/export")
        else:  # nnU-Net trains in its own process while SELECTION trains here
            training = start_segmentation(cfg, wdir, log)
        try:
            exports, enc = build_selection(cfg, wdir, spec, figures, log)
        except BaseException:
            if training is not None:
                training.process.kill()
                training.process.wait()
            raise
        if training is not None:
            hand_over_cores(training, wdir, 2 * cfg.threads, log)
            seg_dir = finish_segmentation(training, wdir, log, cfg.seed)
        assert seg_dir is not None
        figures.timings_s["segmentation_train_export"] = time.time() - t0
        t1 = time.time()
        evaluate_segmentation(cfg, seg_dir, figures, log)
        figures.timings_s["segmentation_eval"] = time.time() - t1
        figures.timings_s["total"] = time.time() - t0  # to the bundle write (~1 s more)
        fig = figures.as_dict()
        notes = json.dumps({
            "statement": NOT_THE_PAPER,
            "figures": fig,
            "config": cfg.as_dict(),
            "build_note": note,
            "method": (
                "Dice: organ (liver incl. tumour) and tumour on held-out synthetic studies, "
                "runtime Segmenter on the native grid. SELECTION images: hccatom.chain on the "
                "ground-truth labels. AUC: held-out cohort; oracle = the true outcome "
                "probability of the known logistic model on the same patients; "
                "MSS = median score on each model's own training set."
            ),
        }, sort_keys=True)
        sel = fig["selection_heldout"]
        seg = fig["segmentation_dice_heldout"]
        prov = Provenance(
            trained_by="`hccatom demo build` (automated, synthetic data only)",
            training_data=(
                f"Synthetic phantoms and cohorts from hccatom.synthetic, seed {cfg.seed}: "
                f"{cfg.seg_train_patients} patients x 2 phases for segmentation; "
                f"{cfg.sel_train} training + {cfg.sel_test} held-out patients per cohort "
                "drawn from the paper's Table 1 marginals with outcomes from a known logistic "
                "model. No patient data."
            ),
            models={
                "segmentation": (
                    f"nnU-Net v2 reduced 3d_fullres (patch {list(cfg.seg_patch)}, features "
                    f"{list(cfg.seg_features)}, spacing {list(cfg.seg_spacing_mm)} mm), "
                    f"{'nnUNetTrainer' if cfg.seg_augmentation else 'nnUNetTrainerNoDA'} "
                    f"trained {cfg.seg_epochs}x{cfg.seg_iterations} iterations on CPU; held-out "
                    f"Dice liver {seg['liver_mean']:.3f}, tumour {seg['tumour_mean']:.3f} "
                    f"({cfg.seg_test_patients} patients x 2 phases)"
                ),
                **{
                    name: (
                        f"small SELECTION (hidden {cfg.sel_hidden}, {cfg.sel_layers} layers, "
                        f"{cfg.sel_patch_px} px patches), synthetic {name} cohort; held-out AUC "
                        f"{v['heldout_auc']:.3f} vs oracle {v['oracle_auc_heldout_sample']:.3f}; "
                        f"MSS {v['mss']:.4f}"
                    )
                    for name, v in sel.items()
                },
            },
            notes=notes,
        )
        build_bundle(  # signed with the public demo key: labelled, proves nothing
            out, sign_key=DEMO_PRIVATE_KEY_PATH,
            segmentation=seg_dir, selection=exports, name=DEMO_BUNDLE_NAME,
            version=f"0.1.0+seed{cfg.seed}", thresholds=figures.thresholds,
            preprocessing=spec, clinical_encoding=enc, provenance=prov, synthetic=True,
            overwrite=overwrite, safety=demo_safety_limits(cfg),
        )
        log(f"demo bundle written to {out} ({_size_mb(out):.1f} MB) in "
            f"{figures.timings_s['total']:.0f} s")
        log(json.dumps(figures.as_dict(), indent=2))
        return figures
    finally:
        if own_work:
            shutil.rmtree(wdir, ignore_errors=True)


def _size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def recorded_figures(manifest: dict[str, Any]) -> dict[str, Any]:
    """The figures a demo build recorded in a manifest's provenance notes."""
    notes = manifest.get("provenance", {}).get("notes", "")
    data = json.loads(notes)
    figures: dict[str, Any] = data["figures"]
    return figures


__all__ = ["DemoConfig", "DemoFigures", "build_demo", "demo_safety_limits", "dice",
           "phase_image_plane", "recorded_figures", "training_cohort"]
