"""Vectorised implicit shapes on a voxel grid, evaluated only inside each shape's bounding box.

Everything here works in patient millimetres ``(z, y, x)`` with the canonical LPS axes
(x towards the patient's left, y posterior, z superior). A :class:`Grid` maps voxel indices
to those millimetres; :meth:`Grid.box` returns the sub-box of a physical bounding box as
index slices plus *open* coordinate arrays (``z[:, None, None]``, ``y[None, :, None]``,
``x[None, None, :]``), so shapes broadcast to the sub-box only and large studies (512 x 512
x 160) stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Box:
    """A sub-box of a grid: index slices and open coordinate arrays in mm."""

    index: tuple[slice, slice, slice]
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @property
    def empty(self) -> bool:
        """True when the box does not intersect the grid."""
        return self.z.size == 0 or self.y.size == 0 or self.x.size == 0


@dataclass(frozen=True)
class Grid:
    """Voxel centres in patient mm: ``coord = (index - centre_index) * spacing + offset``.

    ``offset`` (z, y, x) mm moves the patient relative to the scanner grid, so a second
    phase with a patient shift is the same anatomy evaluated on an offset grid.
    """

    shape: tuple[int, int, int]
    spacing: Vec3
    offset: Vec3 = (0.0, 0.0, 0.0)

    def axis(self, i: int) -> np.ndarray:
        """Coordinates (mm, float32) of every voxel centre along axis ``i``."""
        n = self.shape[i]
        return ((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * self.spacing[i]
                - self.offset[i]).astype(np.float32)

    def index_range(self, i: int, lo_mm: float, hi_mm: float) -> slice:
        """Index slice of the voxels whose centres fall in ``[lo_mm, hi_mm]`` along axis i."""
        n = self.shape[i]
        c = (n - 1) / 2.0
        start = int(np.ceil((lo_mm + self.offset[i]) / self.spacing[i] + c))
        stop = int(np.floor((hi_mm + self.offset[i]) / self.spacing[i] + c)) + 1
        return slice(min(max(start, 0), n), min(max(stop, 0), n))

    def box(self, centre: Vec3, half: Vec3) -> Box:
        """The sub-box covering ``centre +- half`` (mm), clipped to the grid."""
        sl = tuple(
            self.index_range(i, centre[i] - half[i], centre[i] + half[i]) for i in range(3)
        )
        index = (sl[0], sl[1], sl[2])
        z = self.axis(0)[index[0]][:, None, None]
        y = self.axis(1)[index[1]][None, :, None]
        x = self.axis(2)[index[2]][None, None, :]
        return Box(index=index, z=z, y=y, x=x)

    def full(self) -> Box:
        """The whole grid as a box."""
        index = (slice(0, self.shape[0]), slice(0, self.shape[1]), slice(0, self.shape[2]))
        return Box(
            index=index,
            z=self.axis(0)[:, None, None],
            y=self.axis(1)[None, :, None],
            x=self.axis(2)[None, None, :],
        )


def ellipsoid(box: Box, centre: Vec3, semi: Vec3, angle_z: float = 0.0) -> np.ndarray:
    """Normalised squared radius of an ellipsoid (< 1 inside), rotated about z by angle_z rad."""
    dz = (box.z - centre[0]) / semi[0]
    dy0 = box.y - centre[1]
    dx0 = box.x - centre[2]
    if angle_z:
        c, s = np.float32(np.cos(angle_z)), np.float32(np.sin(angle_z))
        dx = (c * dx0 + s * dy0) / semi[2]
        dy = (-s * dx0 + c * dy0) / semi[1]
    else:
        dx = dx0 / semi[2]
        dy = dy0 / semi[1]
    out: np.ndarray = dz * dz + dy * dy + dx * dx
    return out.astype(np.float32, copy=False)


def capsule(box: Box, a: Vec3, b: Vec3) -> np.ndarray:
    """Distance (mm) from each voxel to the segment a-b (a tube is ``capsule(...) < r``)."""
    ab = np.asarray(b, dtype=np.float32) - np.asarray(a, dtype=np.float32)
    denom = float(np.dot(ab, ab)) or 1.0
    pz, py, px = box.z - a[0], box.y - a[1], box.x - a[2]
    t = np.clip((pz * ab[0] + py * ab[1] + px * ab[2]) / denom, 0.0, 1.0)
    dz, dy, dx = pz - t * ab[0], py - t * ab[1], px - t * ab[2]
    out: np.ndarray = np.sqrt(dz * dz + dy * dy + dx * dx)
    return out.astype(np.float32, copy=False)


def ripple(box: Box, waves: np.ndarray) -> np.ndarray:
    """A smooth random field: sum of plane waves; ``waves`` rows are (amp, kz, ky, kx, phase)."""
    out = np.zeros(np.broadcast_shapes(box.z.shape, box.y.shape, box.x.shape), np.float32)
    for amp, kz, ky, kx, ph in waves:
        out += np.float32(amp) * np.sin(box.z * kz + box.y * ky + box.x * kx + np.float32(ph))
    return out


def random_waves(
    rng: np.random.Generator, n: int, amplitude: float, wavelength_mm: tuple[float, float]
) -> np.ndarray:
    """``n`` random plane waves for :func:`ripple`: random directions, wavelengths and phases."""
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    wl = rng.uniform(*wavelength_mm, size=n)
    k = direction * (2 * np.pi / wl)[:, None]
    amp = np.full(n, amplitude / np.sqrt(n))
    phase = rng.uniform(0, 2 * np.pi, size=n)
    return np.column_stack([amp, k, phase]).astype(np.float32)
