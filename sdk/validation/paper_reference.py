"""The paper's published numbers, to print beside a site's own (never used as results).

From the seed paper (eClinicalMedicine 2024;75:102808): Table 2 (SELECTION rows), Table 3
and the hazard ratio quoted for SELECTION-HC. These belong to the paper's models and
patients, not to any bundle built with hccatom.
"""

from __future__ import annotations

from typing import Final

#: Table 2, SELECTION rows: model -> set -> (n, AUC, CI low, CI high, NPV, PPV, SENS, SPEC).
TABLE2_SELECTION: Final[dict[str, dict[str, tuple[int, float, float, float, float, float,
                                                   float, float]]]] = {
    "TACE": {"train": (502, 0.833, 0.797, 0.865, 0.618, 0.897, 0.723, 0.844),
             "internal": (126, 0.788, 0.707, 0.856, 0.724, 0.887, 0.656, 0.915),
             "external": (188, 0.761, 0.693, 0.820, 0.456, 0.893, 0.650, 0.791)},
    "HAIC": {"train": (656, 0.916, 0.892, 0.936, 0.856, 0.924, 0.840, 0.932),
             "internal": (164, 0.854, 0.791, 0.904, 0.750, 0.875, 0.736, 0.883),
             "external": (89, 0.805, 0.707, 0.881, 0.875, 0.684, 0.609, 0.907)},
    "TC": {"train": (202, 0.839, 0.781, 0.887, 0.924, 0.600, 0.813, 0.808),
           "internal": (51, 0.811, 0.677, 0.907, 0.788, 0.722, 0.839, 0.650),
           "external": (61, 0.736, 0.608, 0.841, 0.800, 0.645, 0.686, 0.769)},
    "HC": {"train": (317, 0.925, 0.890, 0.952, 0.873, 0.886, 0.939, 0.775),
           "internal": (80, 0.837, 0.737, 0.910, 0.938, 0.469, 0.726, 0.833),
           "external": (46, 0.748, 0.599, 0.865, 0.529, 0.793, 0.600, 0.742)},
}

#: Table 3 (external validation sets): model -> (consistent events, n), (inconsistent events,
#: n), P, (against events, n), P, (total events, n). P values as printed ("<0.001" -> 0.001).
TABLE3: Final[dict[str, tuple[tuple[int, int], tuple[int, int], str, tuple[int, int], str,
                              tuple[int, int]]]] = {
    "TACE": ((30, 89), (6, 59), "<0.001", (4, 40), "0.005", (40, 188)),
    "HAIC": ((34, 49), (3, 16), "<0.001", (9, 24), "0.012", (46, 89)),
    "TC": ((15, 18), (20, 38), "0.039", (0, 5), "0.002", (35, 61)),
    "HC": ((5, 11), (9, 31), "0.459", (1, 4), "0.604", (15, 46)),
}

#: Fig. 4: the paper quotes one hazard ratio (high vs low risk) with its CI, for SELECTION-HC;
#: all four log-rank P values are < 0.001.
HAZARD_RATIO: Final[dict[str, tuple[float, float, float]]] = {"HC": (3.2, 2.23, 4.23)}

NOTICE: Final[str] = (
    "The paper's numbers come from the authors' own SELECTION models and their patients "
    "(12 hospitals in China, 2014-2021). They are NOT results of this bundle or of this "
    "site's data; they are printed only as the reference a site compares against."
)

__all__ = ["HAZARD_RATIO", "NOTICE", "TABLE2_SELECTION", "TABLE3"]
