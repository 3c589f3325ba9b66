"""Tissue classes of the synthetic phantom and their CT numbers per contrast phase.

A phantom is first painted as a ``uint8`` map of these classes; each phase's image is a
lookup of per-patient HU values (:func:`phase_hu`), so the enhancement pattern by phase is
explicit here: tumours hyper-enhance in the arterial phase and wash out in the portal phase,
arteries peak in the arterial phase and the portal and hepatic veins in the portal phase.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Tissue(IntEnum):
    """Tissue class codes painted into the phantom's class map."""

    AIR = 0
    LUNG = 1
    FAT = 2
    MUSCLE = 3
    BONE = 4
    MARROW = 5
    DISC = 6
    LIVER = 7
    TUMOUR = 8
    NECROSIS = 9
    THROMBUS = 10
    AORTA = 11
    PORTAL_VEIN = 12
    HEPATIC_VEIN = 13
    IVC = 14
    KIDNEY_CORTEX = 15
    KIDNEY_MEDULLA = 16
    SPLEEN = 17
    STOMACH_WALL = 18
    FLUID = 19
    GAS = 20
    ASCITES = 21
    METASTASIS = 22
    BOWEL_WALL = 23
    INTRAHEPATIC_PORTAL = 24


N_TISSUES = max(t.value for t in Tissue) + 1

#: Tissues that are liver (label 1) in the ground truth: parenchyma and intrahepatic vessels.
LIVER_TISSUES = (Tissue.LIVER, Tissue.HEPATIC_VEIN, Tissue.INTRAHEPATIC_PORTAL)
#: Tissues that are tumour (label 2): viable tumour, its necrotic core, tumour thrombus.
TUMOUR_TISSUES = (Tissue.TUMOUR, Tissue.NECROSIS, Tissue.THROMBUS)

# (arterial HU, portal HU, per-patient SD) for tissues whose values do not depend on the
# tumour's latent features. Liver and tumour are set per patient in phase_hu().
_BASE: dict[Tissue, tuple[float, float, float]] = {
    Tissue.AIR: (-1000.0, -1000.0, 0.0),
    Tissue.LUNG: (-850.0, -850.0, 30.0),
    Tissue.FAT: (-100.0, -100.0, 10.0),
    Tissue.MUSCLE: (50.0, 60.0, 6.0),
    Tissue.BONE: (750.0, 750.0, 80.0),
    Tissue.MARROW: (230.0, 235.0, 30.0),
    Tissue.DISC: (85.0, 90.0, 8.0),
    Tissue.NECROSIS: (25.0, 28.0, 6.0),
    Tissue.AORTA: (290.0, 155.0, 40.0),
    Tissue.PORTAL_VEIN: (115.0, 185.0, 15.0),
    Tissue.INTRAHEPATIC_PORTAL: (105.0, 180.0, 15.0),
    Tissue.HEPATIC_VEIN: (65.0, 160.0, 10.0),
    Tissue.IVC: (80.0, 150.0, 12.0),
    Tissue.KIDNEY_CORTEX: (200.0, 175.0, 20.0),
    Tissue.KIDNEY_MEDULLA: (80.0, 165.0, 15.0),
    Tissue.SPLEEN: (115.0, 125.0, 10.0),
    Tissue.STOMACH_WALL: (60.0, 95.0, 8.0),
    Tissue.FLUID: (15.0, 15.0, 5.0),
    Tissue.GAS: (-900.0, -900.0, 40.0),
    Tissue.ASCITES: (10.0, 12.0, 4.0),
    Tissue.BOWEL_WALL: (55.0, 95.0, 8.0),
}


def phase_hu(
    rng: np.random.Generator,
    liver_arterial_hu: float,
    liver_portal_hu: float,
    arterial_enhancement_hu: float,
    washout_hu: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-patient lookup tables (arterial, portal) mapping tissue code -> HU (float32).

    The tumour is ``liver + arterial_enhancement`` in the arterial phase and
    ``liver - washout`` in the portal phase; thrombus and metastases follow the tumour.
    """
    art = np.zeros(N_TISSUES, np.float32)
    por = np.zeros(N_TISSUES, np.float32)
    for tissue, (a, p, sd) in _BASE.items():
        jitter = rng.normal(0.0, sd) if sd else 0.0
        art[tissue] = a + jitter
        por[tissue] = p + jitter * (0.3 if tissue is Tissue.AORTA else 1.0)
    art[Tissue.LIVER] = liver_arterial_hu
    por[Tissue.LIVER] = liver_portal_hu
    art[Tissue.TUMOUR] = liver_arterial_hu + arterial_enhancement_hu
    por[Tissue.TUMOUR] = liver_portal_hu - washout_hu
    art[Tissue.THROMBUS] = liver_arterial_hu + 0.7 * arterial_enhancement_hu
    por[Tissue.THROMBUS] = liver_portal_hu - washout_hu - 15.0
    art[Tissue.METASTASIS] = art[Tissue.TUMOUR] - 10.0
    por[Tissue.METASTASIS] = por[Tissue.TUMOUR] - 5.0
    return art, por


def labels_from_tissues(tissues: np.ndarray) -> np.ndarray:
    """Ground-truth labels (0 background, 1 liver, 2 tumour) from a tissue class map."""
    lut = np.zeros(N_TISSUES, np.uint8)
    lut[list(LIVER_TISSUES)] = 1
    lut[list(TUMOUR_TISSUES)] = 2
    out: np.ndarray = lut[tissues]
    return out
