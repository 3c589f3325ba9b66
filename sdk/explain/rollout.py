"""Attention rollout for SELECTION: the joint token-by-token matrix per layer and its product.

Tokens, in the model's order: arterial class token + its patches, portal class token + its
patches (the image tokens, ``n_img``), then the clinical tokens lab, demo, IV (``n_txt``).

**Joint matrix of a multimodal block** (blocks 0 and 1 of the paper's model). The block
mixes values as ``ctx_img = (A_ii V_img + A_it V_txt) / 2`` and
``ctx_txt = (A_tt V_txt + A_ti V_img) / 2``, each ``A`` averaged over heads. Written as one
matrix over all ``n_img + n_txt`` tokens this is exactly::

    J = 1/2 * [[A_ii, A_it],
               [A_ti, A_tt]]

Every row of ``J`` sums to 1 (each ``A`` is row-stochastic), so ``J`` is the same kind of
object as a plain block's head-averaged attention, and the rollout treats both alike.
A plain block after the concatenation already attends over all tokens: ``J = A_all``.
With ``fusion="image_only"`` only the image tokens exist (``n_txt = 0``).

**Rollout** (the paper's Methods): per layer ``Â = (J + I)`` with rows normalised, i.e.
``Â = (J + I) / 2`` (the identity stands for the residual connection), and
``R = Â_{L-1} ... Â_1 Â_0``. Row ``i`` of ``R`` says how much of output token ``i`` flows
from each input token.

**Token relevance**: SELECTION's head reads the *mean* of all output tokens (not a class
token), so the relevance of input token ``j`` is the mean over rows ``i`` of ``R[i, j]``.
It is non-negative and sums to 1 over all tokens. (The paper reads the class token's row;
SELECTION prepends the shared class token to each phase, and neither row is what the head
uses, hence the mean.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hccatom.errors import BundleError

MULTIMODAL_MAPS: tuple[str, ...] = ("ii", "it", "tt", "ti")


@dataclass(frozen=True)
class ExplainLayout:
    """How an explain graph's outputs map onto tokens (from its ``hccatom.explain`` metadata)."""

    layers: int
    multimodal_layers: int
    tokens_per_phase: int
    patch_grid: tuple[int, int]
    patch_px: int
    image_size_px: int
    clinical_groups: tuple[tuple[str, int], ...]

    @property
    def n_img(self) -> int:
        """Image tokens (both phases, class tokens included)."""
        return 2 * self.tokens_per_phase

    @property
    def n_txt(self) -> int:
        """Clinical tokens (0 for image-only models)."""
        return sum(n for _, n in self.clinical_groups) if self.multimodal_layers else 0

    def map_names(self) -> list[str]:
        """Output names the explain graph must have, in layer order."""
        out: list[str] = []
        for i in range(self.layers):
            if i < self.multimodal_layers:
                out += [f"attn.{i}.{m}" for m in MULTIMODAL_MAPS]
            else:
                out.append(f"attn.{i}.all")
        return out

    @classmethod
    def from_metadata(cls, meta: Mapping[str, object], where: str) -> ExplainLayout:
        """Parse the JSON object the exporter stored; :class:`BundleError` if malformed."""
        try:
            groups = meta["clinical_groups"]  # [[name, n], ...] in token order
            grid = meta["patch_grid"]
            assert isinstance(groups, list) and isinstance(grid, list)
            return cls(
                layers=int(meta["layers"]),  # type: ignore[call-overload]
                multimodal_layers=int(meta["multimodal_layers"]),  # type: ignore[call-overload]
                tokens_per_phase=int(meta["tokens_per_phase"]),  # type: ignore[call-overload]
                patch_grid=(int(grid[0]), int(grid[1])),
                patch_px=int(meta["patch_px"]),  # type: ignore[call-overload]
                image_size_px=int(meta["image_size_px"]),  # type: ignore[call-overload]
                clinical_groups=tuple((str(k), int(v)) for k, v in groups),
            )
        except (KeyError, TypeError, ValueError, AssertionError, IndexError) as exc:
            raise BundleError(
                f"{where}: the explain graph's 'hccatom.explain' metadata is malformed ({exc}); "
                "re-export it with `hccatom export selection ... --explain`."
            ) from exc


def joint_attention(maps: Mapping[str, np.ndarray], layer: int, layout: ExplainLayout
                    ) -> np.ndarray:
    """The joint (B, N, N) matrix of one layer from its head-averaged maps (module doc)."""
    if layer >= layout.multimodal_layers:
        return np.asarray(maps[f"attn.{layer}.all"], dtype=np.float64)
    ii, it, tt, ti = (np.asarray(maps[f"attn.{layer}.{m}"], dtype=np.float64)
                      for m in MULTIMODAL_MAPS)
    top = np.concatenate([ii, it], axis=2)
    bottom = np.concatenate([ti, tt], axis=2)
    return 0.5 * np.concatenate([top, bottom], axis=1)


def rollout(joint: Sequence[np.ndarray]) -> np.ndarray:
    """``R = Â_{L-1} ... Â_0`` with ``Â = (J + I) / 2`` (rows normalised); (B, N, N)."""
    if not joint:
        raise ValueError("rollout needs at least one layer")
    b, n, _ = joint[0].shape
    eye = np.eye(n)
    result = np.broadcast_to(eye, (b, n, n)).copy()
    for j in joint:
        a = j + eye
        a = a / a.sum(axis=-1, keepdims=True)
        result = a @ result
    return result


def token_relevance(maps: Mapping[str, np.ndarray], layout: ExplainLayout) -> np.ndarray:
    """Relevance of every input token (B, N): mean row of the rollout; sums to 1.

    Computed as ``(1/N) 1^T Â_{L-1} ... Â_0``, vector times matrix from the last layer down:
    the same numbers as ``rollout(...).mean(axis=1)`` without the N x N x N products."""
    joint = [joint_attention(maps, i, layout) for i in range(layout.layers)]
    b, n, _ = joint[0].shape
    eye = np.eye(n)
    v = np.full((b, 1, n), 1.0 / n)
    for j in reversed(joint):
        a = j + eye
        v = v @ (a / a.sum(axis=-1, keepdims=True))
    return v[:, 0, :]


__all__ = ["ExplainLayout", "joint_attention", "rollout", "token_relevance"]
