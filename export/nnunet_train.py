"""Train a small nnU-Net v2 model with nnU-Net's own tooling (build time: demo, test fixtures).

nnU-Net reads its folders from environment variables *when it is imported*, so a run goes:

1. :func:`use_workspace` sets ``nnUNet_raw``/``nnUNet_preprocessed``/``nnUNet_results``
   (call it before anything imports ``nnunetv2``);
2. :func:`write_raw_dataset` writes (CT, labels) Volumes as an nnU-Net raw dataset;
3. :func:`plan_and_preprocess` runs nnU-Net's fingerprinting and planning, shrinks the
   3d_fullres plan to a CPU-sized network (:class:`PlanOverrides`) and preprocesses;
4. :func:`train_fold` trains one fold with the stock ``nnUNetTrainer`` whose epoch and
   iteration counts are lowered (nothing else changes: network, loss, augmentation);
5. :func:`slim_model_folder` copies a small model folder (``dataset.json``, ``plans.json``,
   ``fold_X/checkpoint_final.pth`` with only what ``nnUNetPredictor`` needs) for
   :func:`hccatom.export.nnunet_export.export_nnunet`.

Running :func:`train_and_slim` as ``python -m hccatom.export.nnunet_train CONFIG.json``
does all of it in a fresh process, which keeps nnU-Net's import-time paths correct.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hccatom.volume import Volume

TRAINER_NAME = "nnUNetTrainer"
TRAINER_NO_DA = "nnUNetTrainerNoDA"
PLANS_NAME = "nnUNetPlans"
CONFIGURATION = "3d_fullres"
# nnU-Net's environment variables (its spelling)
ENV_RAW, ENV_PRE, ENV_RES = "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"
ENV_COMPILE, ENV_DA = "nnUNet_compile", "nnUNet_n_proc_DA"


@dataclass(frozen=True)
class PlanOverrides:
    """What to change in nnU-Net's 3d_fullres plan so that CPU training is short.

    Sizes are in hccatom's (z, y, x) order; :func:`shrink_plans` maps them onto nnU-Net's
    transposed axes.
    """

    patch_size: tuple[int, int, int] = (24, 96, 96)
    features_per_stage: tuple[int, ...] = (8, 16, 32, 64)
    strides: tuple[tuple[int, int, int], ...] = ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2))
    batch_size: int = 2
    spacing_mm: tuple[float, float, float] | None = None  # None: nnU-Net's choice


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs (serialisable, for the subprocess entry point)."""

    workspace: str
    dataset_id: int
    dataset_name: str
    fold: int | str = 0
    epochs: int = 20
    iterations_per_epoch: int = 25
    threads: int = 2
    seed: int = 0
    overrides: PlanOverrides = field(default_factory=PlanOverrides)
    out_model_folder: str = ""
    augmentation: bool = True  # False: nnU-Net's own nnUNetTrainerNoDA (no DA, no mirroring)
    threads_file: str = ""
    """Optional: a file whose appearance (holding a number) raises the torch thread count at
    the next epoch, e.g. when a job sharing the machine is done."""

    @property
    def trainer_name(self) -> str:
        """The stock nnU-Net trainer class this run's short trainer derives from."""
        return TRAINER_NAME if self.augmentation else TRAINER_NO_DA

    @classmethod
    def from_json(cls, path: Path) -> TrainConfig:
        """Read a config written by :meth:`to_json`."""
        d = json.loads(Path(path).read_text())
        ov = d.pop("overrides", {})
        ov = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
              if isinstance(v, list) else v for k, v in ov.items()}
        return cls(**d, overrides=PlanOverrides(**ov))

    def to_json(self, path: Path) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps(asdict(self), indent=2))


def use_workspace(root: Path) -> None:
    """Point nnU-Net at ``root/{raw,preprocessed,results}`` (before importing nnunetv2)."""
    if "nnunetv2.paths" in sys.modules:
        import nnunetv2.paths as paths

        if paths.nnUNet_raw != str(root / "raw"):
            raise RuntimeError("nnunetv2 was imported before its workspace was set; "
                               "run the training in a fresh process")
    for sub in ("raw", "preprocessed", "results"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.environ[ENV_RAW] = str(root / "raw")
    os.environ[ENV_PRE] = str(root / "preprocessed")
    os.environ[ENV_RES] = str(root / "results")
    os.environ[ENV_COMPILE] = "false"
    os.environ.setdefault(ENV_DA, "0")


def write_volume(path: Path, volume: Volume) -> None:
    """Write a Volume as NIfTI/MHA (SimpleITK wants x, y, z: reversed at this boundary)."""
    import numpy as np
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    img.SetSpacing(tuple(float(s) for s in volume.spacing[::-1]))
    img.SetOrigin(tuple(float(o) for o in volume.origin[::-1]))
    d = np.asarray(volume.direction, dtype=float)[::-1, ::-1]
    img.SetDirection(tuple(float(v) for v in d.ravel()))
    sitk.WriteImage(img, str(path), useCompression=True)


def write_raw_dataset(
    raw_root: Path,
    dataset_id: int,
    dataset_name: str,
    cases: Iterable[tuple[str, Volume, Volume]],
    labels: dict[str, int] | None = None,
    description: str = "synthetic phantoms (hccatom.synthetic); not patient data",
) -> Path:
    """Write ``(case_id, ct, labels)`` triples as ``Dataset<ID>_<name>``; returns its folder."""
    import numpy as np

    ds = raw_root / f"Dataset{dataset_id:03d}_{dataset_name}"
    (ds / "imagesTr").mkdir(parents=True, exist_ok=True)
    (ds / "labelsTr").mkdir(exist_ok=True)
    n = 0
    for case_id, ct, lab in cases:
        ct16 = ct.with_array(np.round(ct.array).astype(np.int16))
        write_volume(ds / "imagesTr" / f"{case_id}_0000.nii.gz", ct16)
        write_volume(ds / "labelsTr" / f"{case_id}.nii.gz", lab)
        n += 1
    (ds / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"},
        "labels": labels or {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": n,
        "file_ending": ".nii.gz",
        "description": description,
    }, indent=2))
    return ds


def shrink_plans(plans_file: Path, ov: PlanOverrides) -> None:
    """Keep only a small 3d_fullres configuration in nnU-Net's plans file."""
    plans = json.loads(plans_file.read_text())
    cfg = plans["configurations"][CONFIGURATION]
    # overrides are (z, y, x); nnU-Net's plan lists axes after its transpose_forward
    tf = [int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
    cfg["patch_size"] = [int(ov.patch_size[a]) for a in tf]
    cfg["batch_size"] = ov.batch_size
    if ov.spacing_mm is not None:
        cfg["spacing"] = [float(ov.spacing_mm[a]) for a in tf]
    n = len(ov.features_per_stage)
    ak = cfg["architecture"]["arch_kwargs"]
    ak["n_stages"] = n
    ak["features_per_stage"] = list(ov.features_per_stage)
    ak["kernel_sizes"] = [[3, 3, 3]] * n
    ak["strides"] = [[int(s[a]) for a in tf] for s in ov.strides]
    ak["n_conv_per_stage"] = [2] * n
    ak["n_conv_per_stage_decoder"] = [2] * (n - 1)
    plans["configurations"] = {CONFIGURATION: cfg}
    plans_file.write_text(json.dumps(plans, indent=2))


LOWRES, CASCADE = "3d_lowres", "3d_cascade_fullres"


@dataclass(frozen=True)
class CascadeOverrides:
    """A ``3d_lowres`` stage added to the shrunk plan, with ``3d_cascade_fullres`` after it.

    nnU-Net's planner adds these two only for images much larger than the 3d_fullres patch;
    :func:`add_cascade_configurations` writes them as it would (the low-resolution stage is
    the 3d_fullres configuration at a coarser spacing, with ``next_stage``; the cascade stage
    inherits 3d_fullres and names ``previous_stage``). Sizes in (z, y, x) order.
    """

    spacing_mm: tuple[float, float, float] = (6.0, 5.0, 5.0)
    patch_size: tuple[int, int, int] = (16, 24, 32)


def add_cascade_configurations(plans_file: Path, cascade: CascadeOverrides) -> None:
    """Add ``3d_lowres`` and ``3d_cascade_fullres`` to a (shrunk) plans file."""
    plans = json.loads(plans_file.read_text())
    tf = [int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
    low = json.loads(json.dumps(plans["configurations"][CONFIGURATION]))
    low["data_identifier"] = f"{PLANS_NAME}_{LOWRES}"
    low["spacing"] = [float(cascade.spacing_mm[a]) for a in tf]
    low["patch_size"] = [int(cascade.patch_size[a]) for a in tf]
    low["next_stage"] = CASCADE
    plans["configurations"][LOWRES] = low
    plans["configurations"][CASCADE] = {"inherits_from": CONFIGURATION,
                                        "previous_stage": LOWRES}
    plans_file.write_text(json.dumps(plans, indent=2))


def plan_and_preprocess(dataset_id: int, dataset_name: str, ov: PlanOverrides,
                        cascade: CascadeOverrides | None = None) -> Path:
    """nnU-Net's fingerprint + plan, shrink the plan (adding a cascade when asked),
    preprocess; returns the preprocessed dir."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.paths import nnUNet_preprocessed

    pre = Path(str(nnUNet_preprocessed)) / f"Dataset{dataset_id:03d}_{dataset_name}"
    nproc = os.environ.get(ENV_DA)
    os.environ[ENV_DA] = "1"  # the planner wants >= 1
    try:
        extract_fingerprints([dataset_id], num_processes=1, check_dataset_integrity=True)
        plan_experiments([dataset_id])
        shrink_plans(pre / f"{PLANS_NAME}.json", ov)
        configurations = [CONFIGURATION]
        if cascade is not None:
            add_cascade_configurations(pre / f"{PLANS_NAME}.json", cascade)
            configurations.append(LOWRES)  # the cascade stage reuses 3d_fullres's data
        preprocess([dataset_id], configurations=configurations,
                   num_processes=[1] * len(configurations))
    finally:
        os.environ[ENV_DA] = nproc or "0"
    return pre


def train_fold(dataset_name_full: str, fold: int | str, epochs: int, iterations: int,
               seed: int = 0, augmentation: bool = True,
               resume_from: Path | None = None, threads_file: Path | None = None,
               val_iterations: int = 3, configuration: str = CONFIGURATION) -> Path:
    """Train one fold with a stock trainer at a CPU-sized schedule; returns its folder.

    ``augmentation=False`` derives from nnU-Net's own ``nnUNetTrainerNoDA`` (no data
    augmentation, no test-time mirroring): it converges much faster on in-distribution
    synthetic data, which is all the demo needs. ``resume_from``: a checkpoint of this
    fold to continue from (nnU-Net's own ``load_checkpoint``; training goes on from its
    epoch up to ``epochs``). ``threads_file``: see :attr:`TrainConfig.threads_file`.
    ``val_iterations``: validation batches per epoch (logging only). ``configuration``:
    the plan's configuration to train (a cascade's ``3d_lowres`` first: its final
    validation writes the ``predicted_next_stage`` segmentations the cascade stage trains on).
    """
    import numpy as np
    import torch
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoDA import (
        nnUNetTrainerNoDA,
    )

    base = nnUNetTrainer if augmentation else nnUNetTrainerNoDA

    class _ShortTrainer(base):  # type: ignore[valid-type,misc]
        """A stock nnU-Net trainer; only the epoch/iteration counts are lowered."""

        def __init__(self, plans: dict, configuration: str, fold: int | str, dataset_json: dict,
                     device: torch.device | None = None) -> None:
            super().__init__(plans, configuration, fold, dataset_json,
                             device or torch.device("cpu"))
            self.num_epochs = epochs
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = val_iterations
            self.save_every = 10_000

        def on_train_epoch_start(self) -> None:
            _maybe_more_threads(threads_file)
            super().on_train_epoch_start()

    torch.manual_seed(seed)
    np.random.seed(seed)
    pre = Path(str(nnUNet_preprocessed)) / dataset_name_full
    plans = json.loads((pre / f"{PLANS_NAME}.json").read_text())
    plans["continue_training"] = False  # this nnU-Net's trainer pops it from the plans
    dataset_json = json.loads((pre / "dataset.json").read_text())
    trainer = _ShortTrainer(plans=plans, configuration=configuration, fold=fold,
                            dataset_json=dataset_json, device=torch.device("cpu"))
    if resume_from is not None:
        trainer.load_checkpoint(str(resume_from))
    t0 = time.time()
    trainer.run_training()
    if trainer.configuration_manager.next_stage_names:
        # as nnUNetv2_train does after training: the validation writes the segmentations
        # the next (cascade) stage trains on (predicted_next_stage/)
        trainer.perform_actual_validation(False)
    print(f"nnU-Net fold {fold}: {epochs} x {iterations} iterations in {time.time() - t0:.0f} s",
          flush=True)
    return Path(trainer.output_folder)


def _maybe_more_threads(threads_file: Path | None) -> None:
    """Raise torch's thread count to the number in ``threads_file`` once it exists."""
    import torch

    if threads_file is None or not threads_file.is_file():
        return
    try:
        wanted = int(threads_file.read_text().strip())
    except ValueError:
        return  # being written; the next epoch reads it again
    if wanted > torch.get_num_threads():
        torch.set_num_threads(wanted)
        print(f"torch threads raised to {wanted} ({threads_file.name})", flush=True)


def slim_checkpoint(src: Path, dst: Path, trainer_name: str = TRAINER_NAME) -> None:
    """Keep only what ``nnUNetPredictor`` reads; name the stock trainer so nnU-Net finds it."""
    import torch

    try:
        ck = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # nnU-Net's own checkpoints hold numpy/python objects
        warnings.warn(
            f"{src.name}: weights_only load failed ({type(exc).__name__}); loading it fully. "
            "This is the file this very run just wrote, never third-party input.",
            stacklevel=2,
        )
        ck = torch.load(src, map_location="cpu", weights_only=False)
    slim = {
        "network_weights": {k: v.contiguous() for k, v in ck["network_weights"].items()},
        "trainer_name": trainer_name,
        "init_args": {"configuration": ck["init_args"]["configuration"],
                      "fold": ck["init_args"]["fold"]},
        "inference_allowed_mirroring_axes": tuple(
            int(a) for a in (ck["inference_allowed_mirroring_axes"] or ())),
        "current_epoch": int(ck["current_epoch"]),
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, dst)


def slim_model_folder(trained: Path, dst: Path, folds: Sequence[int | str],
                      trainer_name: str = TRAINER_NAME,
                      configuration: str = CONFIGURATION) -> Path:
    """Copy a small model folder ``dst/<Trainer>__<Plans>__<configuration>`` from a training."""
    name = f"{trainer_name}__{PLANS_NAME}__{configuration}"
    out = dst / name
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(trained / "dataset.json", out / "dataset.json")
    shutil.copy(trained / "plans.json", out / "plans.json")
    for fold in folds:
        slim_checkpoint(trained / f"fold_{fold}" / "checkpoint_final.pth",
                        out / f"fold_{fold}" / "checkpoint_final.pth", trainer_name)
    return out


def train_and_slim(cfg: TrainConfig) -> Path:
    """Plan, preprocess, train one fold and write the slim model folder (raw data must exist)."""
    import torch

    use_workspace(Path(cfg.workspace))
    torch.set_num_threads(cfg.threads)
    full = f"Dataset{cfg.dataset_id:03d}_{cfg.dataset_name}"
    plan_and_preprocess(cfg.dataset_id, cfg.dataset_name, cfg.overrides)
    fold_dir = train_fold(full, cfg.fold, cfg.epochs, cfg.iterations_per_epoch, cfg.seed,
                          cfg.augmentation,
                          threads_file=Path(cfg.threads_file) if cfg.threads_file else None)
    return slim_model_folder(fold_dir.parent, Path(cfg.out_model_folder), [cfg.fold],
                             cfg.trainer_name)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hccatom.export.nnunet_train CONFIG.json``: one run in a fresh process."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m hccatom.export.nnunet_train CONFIG.json", file=sys.stderr)
        return 2
    folder = train_and_slim(TrainConfig.from_json(Path(args[0])))
    print(f"model folder: {folder}", flush=True)
    return 0


__all__: list[str] = [
    "CascadeOverrides", "PlanOverrides", "TrainConfig", "add_cascade_configurations",
    "plan_and_preprocess", "shrink_plans", "slim_checkpoint",
    "slim_model_folder", "train_and_slim", "train_fold", "use_workspace", "write_raw_dataset",
    "write_volume",
]

if __name__ == "__main__":
    raise SystemExit(main())

