"""SELECTION network sizes and fusion modes, without torch.

The ``hccatom export selection`` help lists them, and must print in an installation without
the export extra; :mod:`hccatom.export.selection_model` (torch) re-exports them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Fusion = Literal["paper", "image_only"]
FUSIONS: tuple[str, ...] = ("paper", "image_only")


@dataclass(frozen=True)
class SelectionSize:
    """Sizes of one SELECTION network. ``paper`` is ViT-B/16; the others are for demos/tests."""

    name: str
    hidden: int
    layers: int
    heads: int
    mlp: int
    image_size: int = 224
    patch: int = 16
    multimodal_layers: int = 2
    n_lab: int = 8
    n_demo: int = 6
    n_iv: int = 6
    num_classes: int = 1

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.image_size % self.patch:
            raise ValueError(f"image_size {self.image_size} is not a multiple of {self.patch}")
        if not 0 < self.multimodal_layers < self.layers:
            raise ValueError(
                "need 0 < multimodal_layers < layers (the clinical tokens join the image "
                f"tokens after the multimodal blocks); got {self.multimodal_layers}, "
                f"{self.layers}"
            )

    @property
    def patches_per_phase(self) -> int:
        """Patch tokens per CT phase (196 for 224 px and 16 px patches)."""
        return (self.image_size // self.patch) ** 2

    @property
    def n_clinical(self) -> int:
        """Clinical tokens (20 in the paper)."""
        return self.n_lab + self.n_demo + self.n_iv

    def as_dict(self) -> dict[str, int | str]:
        """Plain dict for reports and manifests."""
        return asdict(self)


SIZES: dict[str, SelectionSize] = {
    "paper": SelectionSize("paper", hidden=768, layers=12, heads=12, mlp=3072),
    "small": SelectionSize("small", hidden=192, layers=6, heads=3, mlp=768),
    "tiny": SelectionSize("tiny", hidden=64, layers=4, heads=4, mlp=128),
}


def get_size(size: str | SelectionSize) -> SelectionSize:
    """Look up a named size (``paper``, ``small``, ``tiny``) or pass one through."""
    if isinstance(size, SelectionSize):
        return size
    try:
        return SIZES[size]
    except KeyError:
        choices = sorted(SIZES)
        raise ValueError(f"unknown SELECTION size {size!r}; choose one of {choices}") from None


__all__ = ["FUSIONS", "SIZES", "Fusion", "SelectionSize", "get_size"]
