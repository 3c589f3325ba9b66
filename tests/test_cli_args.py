"""``COHORT=PATH`` lists: one parser for ``bundle build --selection`` and ``export --fused``."""

from __future__ import annotations

from pathlib import Path

import pytest

from hccatom.cli_args import cohort_paths
from hccatom.errors import InputError


def test_cohorts_are_upper_cased_and_paths_kept() -> None:
    got = cohort_paths(["tace=a/b", " HC =c=d"], "--selection", "TACE=DIR")
    assert got == {"TACE": Path("a/b"), "HC": Path("c=d")}


@pytest.mark.parametrize("item", ["TACE", "TACE="])
def test_an_item_without_a_path_names_the_option_and_the_form(item: str) -> None:
    with pytest.raises(InputError, match=f"--fused entries look like COHORT=FILE, got '{item}'"):
        cohort_paths([item], "--fused", "COHORT=FILE")


def test_a_cohort_named_twice_is_refused() -> None:
    with pytest.raises(InputError, match="--selection names cohort TACE twice"):
        cohort_paths(["TACE=a", "tace=b"], "--selection", "TACE=DIR")
