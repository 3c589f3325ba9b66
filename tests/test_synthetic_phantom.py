"""Synthetic two-phase CT: determinism, label/intensity consistency, phases, features."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from hccatom import Volume
from hccatom.synthetic import ScanSpec, TumourFeatures, generate_patient

SMALL = ScanSpec(shape_yx=(96, 96), spacing_yx_mm=(4.0, 4.0), slice_thickness_mm=5.0,
                 n_slices=40)
FINE = ScanSpec(shape_yx=(160, 160), spacing_yx_mm=(2.0, 2.0), slice_thickness_mm=2.0,
                n_slices=110)


def test_same_seed_same_study_and_different_seed_differs() -> None:
    a, b, c = generate_patient(7, SMALL), generate_patient(7, SMALL), generate_patient(8, SMALL)
    assert np.array_equal(a.arterial.array, b.arterial.array)
    assert np.array_equal(a.portal.array, b.portal.array)
    assert np.array_equal(a.arterial_labels.array, b.arterial_labels.array)
    assert a.features == b.features
    assert not np.array_equal(a.arterial.array, c.arterial.array)


def test_volumes_follow_the_volume_conventions() -> None:
    p = generate_patient(1, SMALL)
    for v in (p.arterial, p.portal, p.arterial_labels, p.portal_labels):
        assert isinstance(v, Volume)
        assert v.shape == SMALL.shape_zyx
        assert v.spacing == (5.0, 4.0, 4.0)
        assert v.same_grid(p.arterial)
    assert p.arterial.array.dtype == np.float32
    assert p.arterial_labels.array.dtype == np.uint8
    assert set(np.unique(p.arterial_labels.array)) == {0, 1, 2}
    assert any("synthetic" in n for n in p.arterial.notes)


@pytest.mark.parametrize("seed", [0, 3, 12])
def test_labels_agree_with_enhancement_by_phase(seed: int) -> None:
    p = generate_patient(seed, ScanSpec.demo())
    lab, art, por = p.arterial_labels.array, p.arterial.array, p.portal.array
    # erode so partial-volume edges do not blur the comparison
    liver = ndimage.binary_erosion(lab == 1, iterations=1)
    tumour = ndimage.binary_erosion(lab == 2, iterations=1) if (lab == 2).sum() > 200 else lab == 2
    assert liver.sum() > 1000 and tumour.sum() > 20
    liver_a, liver_p = np.median(art[liver]), np.median(por[liver])
    tum_a, tum_p = np.median(art[tumour]), np.median(por[tumour])
    assert 40 < liver_a < 120 and 80 < liver_p < 160  # soft-tissue liver, enhancing by phase
    assert liver_p > liver_a + 15  # parenchyma peaks in the portal phase
    assert tum_a > liver_a + 10  # arterial hyper-enhancement
    assert tum_p < liver_p - 3  # portal washout
    outside = p.arterial_labels.array == 0
    assert np.median(art[outside]) < np.median(art[liver])


def test_aorta_peaks_arterial_and_portal_vein_peaks_portal() -> None:
    p = generate_patient(2, FINE, TumourFeatures(vascular_invasion=False))
    art, por = p.arterial.array, p.portal.array
    # brightest soft tissue in the arterial phase (aorta/heart) is darker in the portal phase
    non_bone = (art > 150) & (art < 450) & (p.arterial_labels.array == 0)
    assert non_bone.sum() > 100
    assert np.median(por[non_bone]) < np.median(art[non_bone]) - 50
    # intrahepatic vessels (liver label, bright in portal) are darker in the arterial phase
    vessels = (p.arterial_labels.array == 1) & (por > 165)
    assert vessels.sum() > 20
    assert np.median(art[vessels]) < np.median(por[vessels]) - 40


def test_no_shift_shares_labels_and_shift_moves_anatomy() -> None:
    still = generate_patient(4, SMALL)
    assert np.array_equal(still.arterial_labels.array, still.portal_labels.array)
    assert still.shift_mm == (0.0, 0.0, 0.0)
    spec = ScanSpec(shape_yx=(128, 128), spacing_yx_mm=(2.5, 2.5), slice_thickness_mm=2.5,
                    n_slices=90, max_shift_mm=12.0)
    moved = generate_patient(4, spec)
    shift = np.asarray(moved.shift_mm)
    assert 0 < np.linalg.norm(shift) <= 12.0
    la, lp = moved.arterial_labels.array > 0, moved.portal_labels.array > 0
    assert abs(int(la.sum()) - int(lp.sum())) < 0.05 * la.sum()
    ca = np.asarray(ndimage.center_of_mass(la)) * np.asarray(spec.spacing_zyx)
    cp = np.asarray(ndimage.center_of_mass(lp)) * np.asarray(spec.spacing_zyx)
    assert np.allclose(cp - ca, shift, atol=2.0)


@pytest.mark.parametrize("diameter", [35.0, 90.0])
def test_largest_tumour_has_the_requested_diameter(diameter: float) -> None:
    feats = TumourFeatures(n_tumours=1, max_diameter_mm=diameter, vascular_invasion=False,
                           necrosis_fraction=0.0)
    p = generate_patient(5, FINE, feats)
    tum = p.arterial_labels.array == 2
    _, n = ndimage.label(tum)
    assert n == 1
    idx = np.nonzero(tum)
    extent = max((a.max() - a.min() + 1) * s for a, s in zip(idx, FINE.spacing_zyx, strict=True))
    assert 0.8 * diameter <= extent <= 1.35 * diameter
    assert p.features == feats


def test_several_tumours_and_necrosis_and_thrombus_are_drawn() -> None:
    base = TumourFeatures(n_tumours=4, max_diameter_mm=100.0, necrosis_fraction=0.35,
                          vascular_invasion=False)
    p = generate_patient(9, FINE, base)
    _, n = ndimage.label(p.arterial_labels.array == 2)
    assert n >= 2  # satellites may merge with the main tumour, not all of them
    art = p.arterial.array
    tum = p.arterial_labels.array == 2
    assert (art[tum] < 45).mean() > 0.05  # a dark necrotic core inside the tumour label
    with_vi = generate_patient(9, FINE, TumourFeatures(
        n_tumours=4, max_diameter_mm=100.0, necrosis_fraction=0.35, vascular_invasion=True))
    assert (with_vi.arterial_labels.array == 2).sum() > tum.sum()


def test_noise_level_matches_the_spec_in_air() -> None:
    spec = ScanSpec(shape_yx=(128, 128), spacing_yx_mm=(3.0, 3.0), slice_thickness_mm=4.0,
                    n_slices=30, noise_hu=20.0)
    p = generate_patient(3, spec)
    corner = p.arterial.array[:, :12, :12]
    assert abs(float(np.median(corner)) + 1000.0) < 3.0
    assert 15.0 < float(corner.std()) < 25.0


def test_random_clinical_protocols_stay_in_the_issue_ranges() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = ScanSpec.random_clinical(rng)
        assert 0.6 <= s.spacing_yx_mm[0] <= 1.0
        assert 0.6 <= s.slice_thickness_mm <= 5.0
    real = ScanSpec.realistic()
    assert real.shape_zyx == (160, 512, 512)
    assert real.spacing_zyx == (1.25, 0.8, 0.8)
