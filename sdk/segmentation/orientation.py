"""The orientation a segmentation model was trained on, and the axis flips/permutation to it.

nnU-Net never reorients: it trains and predicts on the voxel array exactly as each file stores
it (``SimpleITKIO``: ``GetArrayFromImage``). hccatom reads every CT into canonical LPS
(:mod:`hccatom.volume`), so a model trained on files stored another way (e.g. NIfTI written
RAS+, as nibabel and many converters write it) would see its input mirrored in x and y. The
segmentation spec records the training orientation; the runtime permutes/flips the array the
network sees to match, and the labels back.

Orientation codes are DICOM/ITK letters for the array index axes in SimpleITK order
``(x, y, z)``: each letter is the patient direction in which that index increases
(``SimpleITK.DICOMOrientImageFilter.GetOrientationFromDirectionCosines``). hccatom's canonical
volume is ``"LPS"``; a NIfTI stored RAS+ reads as ``"RAS"``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CODE_PATTERN = r"^(?=.*[LR])(?=.*[PA])(?=.*[SI])[LRPASI]{3}$"
_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}
# Volume.direction components are (S, P, L): letter of the positive / negative sense
_POSITIVE = ("S", "P", "L")
_NEGATIVE = ("I", "A", "R")


def is_code(code: str) -> bool:
    """Whether ``code`` names one direction on each of the three patient axes."""
    return bool(re.match(CODE_PATTERN, code))


def orientation_of(direction_zyx: Sequence[Sequence[float]]) -> str:
    """The (nearest-axis) orientation code of a :class:`~hccatom.Volume` direction matrix.

    ``direction_zyx`` columns are the unit vectors of array axes (z, y, x) in (S, P, L)
    components (Volume's convention); the code lists axes x, y, z.
    """
    d = np.asarray(direction_zyx, dtype=float)
    letters_zyx: list[str] = []
    for axis in range(3):
        column = d[:, axis]
        comp = int(np.argmax(np.abs(column)))
        letters_zyx.append(_POSITIVE[comp] if column[comp] > 0 else _NEGATIVE[comp])
    code = "".join(reversed(letters_zyx))
    if not is_code(code):
        raise ValueError(f"direction {d.tolist()} has two axes along one patient axis")
    return code


def _same_axis(a: str, b: str) -> bool:
    return a == b or _OPPOSITE[a] == b


@dataclass(frozen=True)
class Reorientation:
    """Axis permutation + flips taking a ``(…, z, y, x)`` array from one code to another.

    ``source_axis[a]`` is the source array axis (0..2 over z, y, x) that becomes axis ``a``;
    ``flip[a]`` whether it is reversed. :meth:`forward` and :meth:`backward` act on the last
    three axes, so they serve label maps ``(z, y, x)`` and probabilities ``(C, z, y, x)``.
    """

    source: str
    target: str
    source_axis: tuple[int, int, int]
    flip: tuple[bool, bool, bool]

    @classmethod
    def between(cls, source: str, target: str) -> Reorientation:
        """The reorientation from array code ``source`` to ``target``."""
        for c in (source, target):
            if not is_code(c):
                raise ValueError(f"{c!r} is not an orientation code such as 'LPS' or 'RAS'")
        src_zyx, dst_zyx = source[::-1], target[::-1]
        axes: list[int] = []
        flips: list[bool] = []
        for letter in dst_zyx:
            b = next(i for i, s in enumerate(src_zyx) if _same_axis(s, letter))
            axes.append(b)
            flips.append(src_zyx[b] != letter)
        return cls(source, target, (axes[0], axes[1], axes[2]), (flips[0], flips[1], flips[2]))

    @property
    def is_identity(self) -> bool:
        return self.source_axis == (0, 1, 2) and not any(self.flip)

    def forward(self, array: np.ndarray) -> np.ndarray:
        """``array`` (…, z, y, x) in ``source`` orientation -> in ``target`` orientation."""
        if self.is_identity:
            return array
        lead = array.ndim - 3
        out = np.transpose(array, [*range(lead), *(lead + a for a in self.source_axis)])
        flip_axes = tuple(lead + a for a, f in enumerate(self.flip) if f)
        if flip_axes:
            out = np.flip(out, axis=flip_axes)
        return np.ascontiguousarray(out)

    def backward(self, array: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`forward`."""
        return Reorientation.between(self.target, self.source).forward(array)

    def forward_spacing(self, spacing_zyx: Sequence[float]) -> tuple[float, float, float]:
        """Spacing ``(z, y, x)`` of the reoriented array."""
        s = [float(v) for v in spacing_zyx]
        return (s[self.source_axis[0]], s[self.source_axis[1]], s[self.source_axis[2]])


__all__ = ["CODE_PATTERN", "Reorientation", "is_code", "orientation_of"]
