"""One phase name: ``hccatom.phases.Phase`` is the only definition, every module uses it."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import hccatom.phases as phases

SDK = Path(__file__).resolve().parents[1] / "sdk"


def test_phase_literal_and_order_agree() -> None:
    assert typing.get_args(phases.Phase) == phases.PHASES == ("arterial", "portal")


def test_the_recommendation_reuses_the_one_definition() -> None:
    from hccatom.recommendation import Phase

    assert Phase is phases.Phase


def test_no_other_module_defines_a_phase_literal() -> None:
    """A second ``Literal["arterial", "portal"]`` anywhere in the runtime is a second name."""
    found = []
    for path in sorted(SDK.rglob("*.py")):
        if path == SDK / "phases.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "Literal":
                try:
                    args = ast.literal_eval(node.slice)
                except ValueError:  # a Literal of names, not of strings
                    continue
                if set(args if isinstance(args, tuple) else (args,)) == {"arterial", "portal"}:
                    found.append(f"{path.relative_to(SDK)}:{node.lineno}")
    assert found == [], f"phase literal defined again at {found}; import hccatom.phases.Phase"
