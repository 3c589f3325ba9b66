"""Grad-CAM for SELECTION on the last block's image tokens (build time: needs torch).

The paper's figure caption says Grad-CAM; the runtime explains with attention rollout
(:mod:`hccatom.explain.rollout`) and needs no torch. This module lets a site with a
checkpoint draw the Grad-CAM picture and compare the two:

* activations ``A`` (B, N, H): the output of the last encoder block (before the final
  LayerNorm), the image tokens being the first ``2 * (1 + patches)`` of N;
* gradients ``G = d logit / d A``;
* channel weights ``w = mean over the image tokens of G`` (B, H);
* ``cam = relu(sum_h w_h A_h)`` per image token; the class tokens are dropped and each
  phase's patches form its (rows, columns) grid, scaled to a maximum of 1 (all zeros when
  nothing is positive).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from hccatom.export.selection_model import SelectionModel


def grad_cam(model: SelectionModel, inputs: dict[str, Tensor]) -> np.ndarray:
    """Grad-CAM grids (B, 2, rows, columns): arterial then portal, each max-scaled to 1."""
    size = model.size
    n_phase = 1 + size.patches_per_phase
    grid = size.image_size // size.patch
    kept: dict[str, Tensor] = {}

    def keep(_module: Any, _args: Any, output: Tensor) -> None:
        output.retain_grad()
        kept["a"] = output

    last = model.transformer.encoder.layer[-1]
    handle = last.register_forward_hook(keep)
    try:
        model.eval()
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            logit = model(**inputs)
            logit.sum().backward()
    finally:
        handle.remove()
    act = kept["a"].detach()[:, : 2 * n_phase]
    grad = kept["a"].grad
    assert grad is not None
    weights = grad[:, : 2 * n_phase].mean(dim=1, keepdim=True)
    cam = torch.relu((act * weights).sum(dim=-1)).double()  # (B, 2 * n_phase)
    out = np.zeros((cam.shape[0], 2, grid, grid))
    for k in range(2):
        patches = cam[:, k * n_phase + 1:(k + 1) * n_phase].reshape(-1, grid, grid)
        peak = patches.amax(dim=(1, 2), keepdim=True)
        out[:, k] = torch.where(peak > 0, patches / peak.clamp_min(1e-300),
                                torch.zeros_like(patches)).numpy()
    return out


__all__ = ["grad_cam"]
