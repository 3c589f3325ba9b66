"""Seeded synthetic two-phase abdominal CT with ground-truth liver/tumour labels.

Not a patient, not a simulation of one: a plausible-looking phantom so that a segmentation
model can learn something, the preprocessing chain can be exercised end to end, and
benchmarks can run on realistic array sizes. The anatomy (body wall with fat and muscle,
spine and ribs, lung bases, aorta, IVC, portal and hepatic veins, kidneys, spleen, stomach,
bowel, a lobulated liver, one or more tumours, optional ascites, portal vein tumour thrombus
and extrahepatic metastases) is painted as a tissue map on the scanner grid; each contrast
phase is a lookup of per-patient HU values, a partial-volume blur and correlated noise.

All arrays are ``(z, y, x)`` in canonical LPS; spacing ``(z, y, x)`` mm. Vectorised numpy:
each structure is evaluated only inside its bounding box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage

from hccatom.safety.image_checks import SYNTHETIC_PHANTOM_NOTE
from hccatom.synthetic.geometry import Box, Grid, Vec3, capsule, ellipsoid, random_waves, ripple
from hccatom.synthetic.tissues import Tissue, labels_from_tissues, phase_hu
from hccatom.volume import Volume

T = Tissue


@dataclass(frozen=True)
class TumourFeatures:
    """Latent tumour and liver features of one synthetic patient (the image's ground truth).

    ``max_diameter_mm`` is the largest tumour's longest axis; ``arterial_enhancement_hu`` is
    tumour minus liver in the arterial phase, ``washout_hu`` liver minus tumour in the portal
    phase; ``necrosis_fraction`` is the necrotic share of the largest tumour's volume.
    """

    n_tumours: int = 1
    max_diameter_mm: float = 60.0
    arterial_enhancement_hu: float = 55.0
    washout_hu: float = 25.0
    necrosis_fraction: float = 0.1
    vascular_invasion: bool = False
    metastasis: bool = False
    ascites: bool = False
    liver_nodularity: float = 0.3

    @classmethod
    def random(cls, rng: np.random.Generator) -> TumourFeatures:
        """A generic draw (used when no cohort supplies the features)."""
        n = int(rng.choice([1, 1, 2, 3, 4, 5, 6]))
        return cls(
            n_tumours=n,
            max_diameter_mm=float(rng.uniform(25.0, 130.0)),
            arterial_enhancement_hu=float(rng.uniform(30.0, 90.0)),
            washout_hu=float(rng.uniform(10.0, 45.0)),
            necrosis_fraction=float(rng.uniform(0.0, 0.35)),
            vascular_invasion=bool(rng.random() < 0.4),
            metastasis=bool(rng.random() < 0.25),
            ascites=bool(rng.random() < 0.15),
            liver_nodularity=float(rng.uniform(0.0, 1.0)),
        )


@dataclass(frozen=True)
class ScanSpec:
    """Acquisition geometry and image quality of a synthetic study.

    ``spacing_yx_mm`` is the in-plane pixel size; slices are contiguous, so the z spacing is
    ``slice_thickness_mm``. ``max_shift_mm`` bounds a random rigid patient shift of the
    portal phase relative to the arterial phase (0: phases share one anatomy grid).
    """

    shape_yx: tuple[int, int] = (128, 128)
    spacing_yx_mm: tuple[float, float] = (3.0, 3.0)
    slice_thickness_mm: float = 4.0
    n_slices: int = 48
    noise_hu: float = 12.0
    blur_px: float = 0.6
    max_shift_mm: float = 0.0
    centre_on: Literal["liver", "tumour"] = "liver"

    @classmethod
    def demo(cls) -> ScanSpec:
        """Small and fast (128 x 128 x 48 at 3 x 3 x 4 mm): the demo and CI tests."""
        return cls()

    @classmethod
    def realistic(cls) -> ScanSpec:
        """A realistic study for benchmarks: 512 x 512 x 160 at 0.8 mm, 1.25 mm slices."""
        return cls(
            shape_yx=(512, 512),
            spacing_yx_mm=(0.8, 0.8),
            slice_thickness_mm=1.25,
            n_slices=160,
            noise_hu=15.0,
            blur_px=0.8,
            max_shift_mm=4.0,
        )

    @classmethod
    def random_clinical(cls, rng: np.random.Generator, shape_yx: int = 512) -> ScanSpec:
        """A random clinical protocol: in-plane 0.6-1.0 mm, slices 0.6-5 mm, ~200 mm in z."""
        pixel = float(rng.uniform(0.6, 1.0))
        thick = float(rng.choice([0.625, 1.0, 1.25, 2.5, 3.0, 5.0]))
        return cls(
            shape_yx=(shape_yx, shape_yx),
            spacing_yx_mm=(pixel, pixel),
            slice_thickness_mm=thick,
            n_slices=round(200.0 / thick),
            noise_hu=float(rng.uniform(8.0, 20.0)),
            blur_px=0.7,
            max_shift_mm=5.0,
        )

    @property
    def spacing_zyx(self) -> Vec3:
        """Voxel spacing (z, y, x) mm."""
        return (self.slice_thickness_mm, self.spacing_yx_mm[0], self.spacing_yx_mm[1])

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Array shape (z, y, x)."""
        return (self.n_slices, self.shape_yx[0], self.shape_yx[1])


@dataclass(frozen=True)
class _Lump:
    centre: Vec3
    semi: Vec3
    angle: float
    waves: np.ndarray
    necrosis: float = 0.0


@dataclass(frozen=True)
class _Anatomy:
    """Every random choice of one phantom, drawn before painting so phases agree."""

    body_semi_yx: tuple[float, float]
    fat_mm: float
    muscle_mm: float
    spine_y: float
    z_dome: float
    liver_lobes: tuple[_Lump, ...]
    liver_waves: np.ndarray
    liver_ripple: float
    kidneys: tuple[_Lump, ...]
    spleen: _Lump
    stomach: _Lump
    portal_tree: tuple[tuple[Vec3, Vec3, float], ...]
    hepatic_veins: tuple[tuple[Vec3, Vec3, float], ...]
    tumours: tuple[_Lump, ...]
    thrombus: tuple[tuple[Vec3, Vec3, float], ...]
    metastases: tuple[tuple[Vec3, float], ...]
    ascites: bool
    bowel_waves: np.ndarray
    rib_phase: float
    hu_arterial: np.ndarray = field(repr=False)
    hu_portal: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class SyntheticPatient:
    """One synthetic study: two phases, their labels and the latent features behind them."""

    seed: int
    arterial: Volume
    portal: Volume
    arterial_labels: Volume
    portal_labels: Volume
    features: TumourFeatures
    shift_mm: Vec3


def _j(rng: np.random.Generator, sd: float) -> float:
    return float(rng.normal(0.0, sd))


def _draw_anatomy(rng: np.random.Generator, f: TumourFeatures) -> _Anatomy:
    s = float(rng.uniform(0.9, 1.08))  # patient size
    ax, ay = 160.0 * s + _j(rng, 6), 118.0 * s + _j(rng, 5)
    fat = float(rng.uniform(8.0, 28.0))
    muscle = float(rng.uniform(8.0, 14.0))
    spine_y = ay - fat - muscle - 48.0
    lv = s * float(rng.uniform(0.92, 1.1))
    right = (_j(rng, 5), -5.0 + _j(rng, 4), -58.0 * s + _j(rng, 4))
    lobes = (
        _Lump(right, (85.0 * lv, 80.0 * lv, 68.0 * lv), _j(rng, 0.1), np.zeros((0, 5), np.float32)),
        _Lump((right[0] + 22 * lv, -42.0 * lv + _j(rng, 4), 5.0 * s + _j(rng, 6)),
              (42.0 * lv, 30.0 * lv, 62.0 * lv), -0.2 + _j(rng, 0.1), np.zeros((0, 5), np.float32)),
        _Lump((right[0] + 8, 22.0 * lv, -18.0 * s), (30.0 * lv, 20.0 * lv, 20.0 * lv), 0.0,
              np.zeros((0, 5), np.float32)),
    )
    z_dome = right[0] + 75.0 * lv
    kid = []
    for side in (-1.0, 1.0):
        kc = (right[0] - 70.0 * s + (12.0 if side > 0 else 0.0) + _j(rng, 5),
              spine_y - 8.0 + _j(rng, 3), side * (62.0 * s + _j(rng, 4)))
        kid.append(_Lump(kc, (50.0 * s, 24.0 * s, 27.0 * s), side * 0.45 + _j(rng, 0.1),
                         np.zeros((0, 5), np.float32)))
    spleen = _Lump((right[0] + 15 + _j(rng, 6), 40.0 * s, 98.0 * s + _j(rng, 4)),
                   (48.0 * s, 45.0 * s, 20.0 * s), 0.55 + _j(rng, 0.1),
                   random_waves(rng, 3, 0.1, (40.0, 80.0)))
    stomach = _Lump((right[0] + 25 + _j(rng, 6), -22.0 * s, 55.0 * s + _j(rng, 5)),
                    (42.0 * s, 32.0 * s, 38.0 * s), 0.3, random_waves(rng, 3, 0.1, (40.0, 80.0)))

    hilum = (right[0] - 8, 8.0 + _j(rng, 3), -28.0 * s + _j(rng, 3))
    conf = (right[0] - 48, 18.0, 6.0 * s)
    rb_end = (right[0] + _j(rng, 6), 2.0 + _j(rng, 6), -92.0 * lv)
    lb_end = (right[0] + 18 + _j(rng, 5), -38.0 * lv, 18.0 * lv)
    r_mid = ((hilum[0] + rb_end[0]) / 2, (hilum[1] + rb_end[1]) / 2, (hilum[2] + rb_end[2]) / 2)
    portal = (
        (conf, hilum, 7.0),
        (hilum, rb_end, 5.0),
        (hilum, lb_end, 4.5),
        (r_mid, (right[0] + 40 * lv, -35.0 * lv, -70.0 * lv), 3.0),
        (r_mid, (right[0] - 40 * lv, 38.0 * lv, -80.0 * lv), 3.0),
    )
    ivc_top = (z_dome - 12.0, spine_y - 30.0, -20.0)
    hv = (
        (ivc_top, (right[0] + 20 * lv, -5.0, -105.0 * lv), 4.5),
        (ivc_top, (right[0] + 10 * lv, -50.0 * lv, -40.0 * lv), 4.0),
        (ivc_top, (right[0] + 30 * lv, -38.0 * lv, 22.0 * lv), 3.5),
    )

    tumours = []
    d = f.max_diameter_mm
    in_left = d < 80.0 and rng.random() < 0.25
    lobe = lobes[1] if in_left else lobes[0]
    room = np.maximum(np.asarray(lobe.semi) - 0.45 * d, 0.0)
    c = tuple(float(v) for v in np.asarray(lobe.centre) + rng.uniform(-1, 1, 3) * room * 0.6)
    semi = (d / 2 * float(rng.uniform(0.8, 1.0)), d / 2 * float(rng.uniform(0.8, 1.0)), d / 2)
    tumours.append(_Lump((c[0], c[1], c[2]), semi, float(rng.uniform(0, np.pi)),
                         random_waves(rng, 4, 0.12, (20.0, 60.0)), f.necrosis_fraction))
    for _ in range(max(f.n_tumours - 1, 0)):
        lb = lobes[int(rng.random() < 0.3)]
        u = rng.normal(size=3)
        u = u / np.linalg.norm(u) * rng.uniform(0.0, 0.75)
        cc = np.asarray(lb.centre) + u * np.asarray(lb.semi)
        r = float(rng.uniform(6.0, min(18.0, 0.3 * d + 6.0)))
        tumours.append(_Lump((float(cc[0]), float(cc[1]), float(cc[2])), (r, r * 0.9, r), 0.0,
                             random_waves(rng, 2, 0.1, (15.0, 40.0))))
    thrombus: tuple[tuple[Vec3, Vec3, float], ...] = ()
    if f.vascular_invasion:  # tumour thrombus: the lobe's branch and the trunk's hepatic half
        seg = portal[1] if not in_left else portal[2]
        trunk_mid = tuple((a + b) / 2 for a, b in zip(conf, hilum, strict=True))
        thrombus = (
            (seg[0], seg[1], seg[2] + 1.5),
            ((trunk_mid[0], trunk_mid[1], trunk_mid[2]), hilum, portal[0][2] + 1.0),
        )
    mets: list[tuple[Vec3, float]] = []
    if f.metastasis:
        for _ in range(int(rng.integers(1, 4))):
            site = rng.integers(0, 3)
            if site == 0:  # lung base
                side = float(rng.choice([-1, 1]))
                pos = (z_dome + float(rng.uniform(-10, 25)), 45.0 * s, side * 95 * s)
            elif site == 1:  # para-aortic node
                pos = (right[0] - 60 + _j(rng, 10), spine_y - 35.0, 40.0 * s)
            else:  # peritoneal deposit
                pos = (right[0] - 85 + _j(rng, 10), -60.0 * s, float(rng.uniform(-40, 40)))
            mets.append((pos, float(rng.uniform(6.0, 13.0))))

    hu_a, hu_p = phase_hu(
        rng,
        liver_arterial_hu=float(rng.normal(78.0, 8.0)),
        liver_portal_hu=float(rng.normal(118.0, 8.0)),
        arterial_enhancement_hu=f.arterial_enhancement_hu,
        washout_hu=f.washout_hu,
    )
    return _Anatomy(
        body_semi_yx=(ay, ax), fat_mm=fat, muscle_mm=muscle, spine_y=spine_y, z_dome=z_dome,
        liver_lobes=lobes, liver_waves=random_waves(rng, 5, 1.0, (35.0, 90.0)),
        liver_ripple=0.06 + 0.1 * f.liver_nodularity, kidneys=(kid[0], kid[1]),
        spleen=spleen, stomach=stomach, portal_tree=portal, hepatic_veins=hv,
        tumours=tuple(tumours), thrombus=thrombus, metastases=tuple(mets), ascites=f.ascites,
        bowel_waves=random_waves(rng, 3, 1.0, (30.0, 60.0)), rib_phase=float(rng.uniform(0, 6.3)),
        hu_arterial=hu_a, hu_portal=hu_p,
    )


def _paint(t: np.ndarray, box: Box, mask: np.ndarray, tissue: Tissue) -> None:
    sub = t[box.index]
    sub[np.broadcast_to(mask, sub.shape)] = tissue


def _lump_box(grid: Grid, lump: _Lump, pad: float = 1.15) -> Box:
    r = max(lump.semi) * pad
    return grid.box(lump.centre, (r, r, r))


def _lump_field(box: Box, lump: _Lump) -> np.ndarray:
    f = ellipsoid(box, lump.centre, lump.semi, lump.angle)
    if len(lump.waves):
        f = f + ripple(box, lump.waves)
    return f


def _tube_box(grid: Grid, a: Vec3, b: Vec3, r: float) -> Box:
    lo = np.minimum(a, b) - r - 1
    hi = np.maximum(a, b) + r + 1
    c = (lo + hi) / 2
    h = (hi - lo) / 2
    return grid.box(
        (float(c[0]), float(c[1]), float(c[2])), (float(h[0]), float(h[1]), float(h[2]))
    )


def _liver_field(box: Box, an: _Anatomy) -> np.ndarray:
    # smooth union of lobes: -log(sum(exp(-k f))) / k, then a nodular ripple
    k = np.float32(6.0)
    acc = np.zeros(np.broadcast_shapes(box.z.shape, box.y.shape, box.x.shape), np.float32)
    for lobe in an.liver_lobes:
        acc += np.exp(-k * ellipsoid(box, lobe.centre, lobe.semi, lobe.angle))
    out: np.ndarray = -np.log(np.maximum(acc, 1e-30)) / k
    out += np.float32(an.liver_ripple) * ripple(box, an.liver_waves)
    return out


def _diaphragm(box: Box, an: _Anatomy) -> np.ndarray:
    right = an.z_dome - 0.0045 * ((box.x + 55.0) ** 2 + (box.y + 5.0) ** 2)
    left = an.z_dome - 15.0 - 0.0045 * ((box.x - 55.0) ** 2 + (box.y + 5.0) ** 2)
    out: np.ndarray = np.maximum(right, left)
    return out


def _paint_anatomy(grid: Grid, an: _Anatomy) -> np.ndarray:
    t = np.zeros(grid.shape, np.uint8)
    full = grid.full()
    ay, ax = an.body_semi_yx
    y2, x2 = full.y[0], full.x[0]  # (ny,1), (1,nx)
    zc = full.z[:, :, 0][:, :, None]  # (nz,1,1)

    def ring(dy: float, dx: float, cy: float = 0.0, p: float = 2.4) -> np.ndarray:
        r: np.ndarray = (np.abs((y2 - cy) / dy) ** p + np.abs(x2 / dx) ** p) ** (1.0 / p)
        return r

    taper = 1.0 + 0.0006 * np.clip(-zc, 0, None)  # belly widens a little caudally
    body = ring(ay, ax)[None] < taper
    t[body] = T.FAT
    inner_y, inner_x = ay - an.fat_mm, ax - an.fat_mm
    t[ring(inner_y, inner_x)[None] < taper] = T.MUSCLE
    cav_y, cav_x = inner_y - an.muscle_mm, inner_x - an.muscle_mm
    cavity2d = ring(cav_y, cav_x) < 1.0
    cavity = np.broadcast_to(cavity2d[None], grid.shape)
    t[cavity] = T.FAT

    # paraspinal muscles
    for side in (-1.0, 1.0):
        b = grid.box((0.0, an.spine_y + 42.0, side * 38.0), (1e4, 30.0, 30.0))
        m = ((b.y - an.spine_y - 42.0) / 26.0) ** 2 + ((b.x - side * 38.0) / 26.0) ** 2 < 1
        _paint(t, b, m, T.MUSCLE)

    # ribs: a shell just inside the muscle wall, broken into oblique bars along z
    rr = ring(cav_y, cav_x)
    theta = np.arctan2(y2, x2)
    shell = (rr > 0.96) & (rr < 1.03) & ~((np.abs(x2) < 45) & (y2 < 0))
    bars = np.cos(9.0 * theta[None] + zc * (2 * np.pi / 38.0) + an.rib_phase) > 0.85
    rib_zone = (zc > an.z_dome - 120.0)
    t[shell[None] & bars & rib_zone] = T.BONE

    # bowel below the liver, anterior
    b = grid.box((an.z_dome - 170.0, -cav_y / 2, 0.0), (80.0, cav_y / 2, cav_x))
    if not b.empty:
        w = ripple(b, an.bowel_waves)
        inside = np.broadcast_to(cavity2d[b.index[1], b.index[2]][None], w.shape)
        wall = inside & (np.abs(w) < 0.35)
        lumen = inside & (w > 0.35)
        gas = inside & (w < -0.6)
        _paint(t, b, wall, T.BOWEL_WALL)
        _paint(t, b, lumen, T.FLUID)
        _paint(t, b, gas, T.GAS)

    # lung bases and heart above the diaphragm
    dia = _diaphragm(full, an)
    above = (zc > dia) & cavity
    t[above] = T.LUNG
    heart = above & (((y2 + 40.0) / 45.0) ** 2 + ((x2 - 30.0) / 55.0) ** 2 < 1)[None]
    t[heart] = T.AORTA

    # liver surroundings: ascites, stomach, spleen
    liver_box = grid.box((an.liver_lobes[0].centre[0], 0.0, -20.0), (115.0, 130.0, 150.0))
    lf = _liver_field(liver_box, an) if not liver_box.empty else None
    cav_box = np.broadcast_to(cavity2d[liver_box.index[1], liver_box.index[2]][None],
                              lf.shape) if lf is not None else None
    below = (liver_box.z < _diaphragm(liver_box, an) - 2.0)
    if an.ascites and lf is not None and cav_box is not None:
        _paint(t, liver_box, (lf < 1.55) & cav_box & below, T.ASCITES)
    for lump, tissue in ((an.stomach, T.STOMACH_WALL), (an.spleen, T.SPLEEN)):
        b = _lump_box(grid, lump)
        if not b.empty:
            fld = _lump_field(b, lump)
            _paint(t, b, fld < 1.0, tissue)
            if tissue is T.STOMACH_WALL:
                lumen = fld < 0.7
                _paint(t, b, lumen & (b.y >= lump.centre[1] - 8), T.FLUID)
                _paint(t, b, lumen & (b.y < lump.centre[1] - 8), T.GAS)

    # liver, its vessels, tumours
    if lf is not None and cav_box is not None:
        liver = (lf < 1.0) & cav_box & below
        _paint(t, liver_box, liver, T.LIVER)
    for a, bb, r in an.portal_tree:
        b = _tube_box(grid, a, bb, r)
        if b.empty:
            continue
        tube = capsule(b, a, bb) < r
        sub = t[b.index]
        inliver = tube & (sub == T.LIVER)
        sub[tube & ~inliver & (sub != T.LUNG)] = T.PORTAL_VEIN
        sub[inliver] = T.INTRAHEPATIC_PORTAL
    for a, bb, r in an.hepatic_veins:
        b = _tube_box(grid, a, bb, r)
        if b.empty:
            continue
        tube = capsule(b, a, bb) < r
        sub = t[b.index]
        sub[tube & (sub == T.LIVER)] = T.HEPATIC_VEIN
    liverish = (T.LIVER, T.INTRAHEPATIC_PORTAL, T.HEPATIC_VEIN)
    for lump in an.tumours:
        b = _lump_box(grid, lump, pad=1.3)
        if b.empty:
            continue
        fld = _lump_field(b, lump)
        sub = t[b.index]
        hepatic = np.isin(sub, liverish)
        sub[(fld < 1.0) & hepatic] = T.TUMOUR
        if lump.necrosis > 0:
            core = (fld < 0.85 * lump.necrosis ** (2.0 / 3.0)) & hepatic
            sub[core] = T.NECROSIS
    for a, bb, r in an.thrombus:
        b = _tube_box(grid, a, bb, r)
        if not b.empty:
            sub = t[b.index]
            vessel = (*liverish, T.TUMOUR, T.PORTAL_VEIN, T.NECROSIS)
            sub[(capsule(b, a, bb) < r) & np.isin(sub, vessel)] = T.THROMBUS

    # retroperitoneum and spine override
    for lump in an.kidneys:
        b = _lump_box(grid, lump)
        if b.empty:
            continue
        fld = ellipsoid(b, lump.centre, lump.semi, lump.angle)
        _paint(t, b, fld < 1.0, T.KIDNEY_CORTEX)
        _paint(t, b, fld < 0.45, T.KIDNEY_MEDULLA)
        _paint(t, b, fld < 0.08, T.FLUID)
    aorta = ((y2 - (an.spine_y - 32.0)) ** 2 + (x2 - 18.0) ** 2 < 12.0**2)[None] & (zc < an.z_dome)
    t[np.broadcast_to(aorta, grid.shape)] = T.AORTA
    ivc = (((y2 - (an.spine_y - 28.0)) / 11.0) ** 2 + ((x2 + 22.0) / 14.0) ** 2 < 1)[None]
    t[np.broadcast_to(ivc & (zc < an.z_dome - 8), grid.shape)] = T.IVC
    vb = ((y2 - an.spine_y) / 17.0) ** 2 + (x2 / 21.0) ** 2
    disc = np.mod(zc, 32.0) < 7.0
    t[np.broadcast_to((vb < 1.0)[None], grid.shape)] = T.BONE
    t[np.broadcast_to((vb < 0.7)[None], grid.shape)] = T.MARROW
    t[np.broadcast_to((vb < 1.0)[None] & disc, grid.shape)] = T.DISC
    arch = ((y2 - an.spine_y - 26.0) / 15.0) ** 2 + (x2 / 15.0) ** 2 < 1
    canal = ((y2 - an.spine_y - 26.0) / 8.0) ** 2 + (x2 / 8.0) ** 2 < 1
    spinous = ((y2 - an.spine_y - 45.0) / 14.0) ** 2 + (x2 / 5.0) ** 2 < 1
    t[np.broadcast_to((arch | spinous)[None], grid.shape)] = T.BONE
    t[np.broadcast_to(canal[None], grid.shape)] = T.FLUID

    for pos, r in an.metastases:
        b = grid.box(pos, (r, r, r))
        if not b.empty:
            m = ellipsoid(b, pos, (r, r, r)) < 1.0
            _paint(t, b, m, T.METASTASIS)
    t[~np.broadcast_to(body, grid.shape)] = T.AIR
    return t


def _kernel_energy(sigma: float) -> float:
    """Sum of squared weights of scipy's discrete Gaussian kernel (noise variance gain)."""
    if sigma <= 0:
        return 1.0
    r = int(4.0 * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    return float(np.sum(w * w))


def _image(
    tissues: np.ndarray, lut: np.ndarray, an: _Anatomy, grid: Grid, scan: ScanSpec,
    rng: np.random.Generator, arterial: bool,
) -> np.ndarray:
    img = lut[tissues]
    # mottled tumour and (arterial) zebra spleen: low-amplitude texture inside their boxes
    for lump in an.tumours[:1]:
        b = _lump_box(grid, lump)
        if not b.empty:
            sub, tsub = img[b.index], tissues[b.index]
            tex = ripple(b, lump.waves) * np.float32(60.0)
            m = tsub == T.TUMOUR
            sub[m] += np.broadcast_to(tex, sub.shape)[m]
    if arterial:
        b = _lump_box(grid, an.spleen)
        if not b.empty:
            sub, tsub = img[b.index], tissues[b.index]
            tex = np.sin(b.z * 0.25 + b.x * 0.2 + b.y * 0.1) * np.float32(18.0)
            m = tsub == T.SPLEEN
            sub[m] += np.broadcast_to(tex, sub.shape)[m]
    sig = (0.45, scan.blur_px, scan.blur_px)
    gain = float(np.prod([_kernel_energy(s) for s in sig]))
    noise = rng.standard_normal(size=img.shape, dtype=np.float32)
    img += noise * np.float32(scan.noise_hu / np.sqrt(gain))
    del noise
    out: np.ndarray = ndimage.gaussian_filter(img, sigma=sig, mode="nearest", truncate=4.0)
    return out.astype(np.float32, copy=False)


def generate_patient(
    seed: int,
    scan: ScanSpec | None = None,
    features: TumourFeatures | None = None,
) -> SyntheticPatient:
    """A seeded synthetic two-phase study (same seed, spec and features -> same arrays).

    The patient is centred in-plane; slices are centred on the liver with a small random
    offset. The portal phase may be shifted by up to ``scan.max_shift_mm`` (rigid).
    """
    scan = scan or ScanSpec.demo()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    feats = features or TumourFeatures.random(rng)
    an = _draw_anatomy(rng, feats)
    jitter = float(rng.uniform(-10, 10))
    if scan.centre_on == "tumour":
        z_centre = an.tumours[0].centre[0] + 0.2 * jitter
    else:
        z_centre = an.liver_lobes[0].centre[0] + 10.0 + jitter
    shift_dir = rng.normal(size=3)
    shift_dir /= np.linalg.norm(shift_dir)
    shift = tuple(float(v) for v in shift_dir * rng.uniform(0, 1) * scan.max_shift_mm)
    grid_a = Grid(scan.shape_zyx, scan.spacing_zyx, (-z_centre, 0.0, 0.0))
    grid_p = Grid(scan.shape_zyx, scan.spacing_zyx, (-z_centre + shift[0], shift[1], shift[2]))
    t_a = _paint_anatomy(grid_a, an)
    t_p = t_a if scan.max_shift_mm == 0 else _paint_anatomy(grid_p, an)
    img_a = _image(t_a, an.hu_arterial, an, grid_a, scan, rng, arterial=True)
    img_p = _image(t_p, an.hu_portal, an, grid_p, scan, rng, arterial=False)
    sp = scan.spacing_zyx
    half = [-(n - 1) / 2.0 * d for n, d in zip(scan.shape_zyx, sp, strict=True)]
    origin = (half[0] + z_centre, half[1], half[2])
    note = (SYNTHETIC_PHANTOM_NOTE,)  # the marker hccatom.safety recognises phantoms by
    lab_a = labels_from_tissues(t_a)
    lab_p = lab_a if t_p is t_a else labels_from_tissues(t_p)
    return SyntheticPatient(
        seed=seed,
        arterial=Volume.from_array(img_a, sp, origin=origin, notes=note),
        portal=Volume.from_array(img_p, sp, origin=origin, notes=note),
        arterial_labels=Volume.from_array(lab_a, sp, origin=origin, notes=note),
        portal_labels=Volume.from_array(lab_p, sp, origin=origin, notes=note),
        features=feats,
        shift_mm=(shift[0], shift[1], shift[2]),
    )
