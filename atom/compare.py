"""``compare_policies``: how often two ATOM policies disagree on a cohort of scores.

The paper prints the two-stage structure but not every rule (see
:data:`~hccatom.atom.policy.CHOICES_NOT_IN_PAPER`), so two readings can recommend different
plans for the same four scores. This module runs both readings on one scores table and
tabulates the plans side by side (the Table 3 view: how many patients each plan gets) and
where they differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from hccatom.atom.decision import decide
from hccatom.atom.policy import MODELS, PLANS, AtomPolicy
from hccatom.errors import ScoreInputError

ScoresTable = Iterable[Mapping[str, float]] | Mapping[str, Sequence[float]]


class PolicyComparison(BaseModel):
    """Two policies' plans on the same cohort, side by side."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_a: str
    policy_b: str
    n_patients: int = Field(ge=0)
    n_disagree: int = Field(ge=0, description="Patients whose final plans differ.")
    disagreement_fraction: float = Field(description="n_disagree / n_patients (0 when empty).")
    plans_a: dict[str, int] = Field(description="Patients per final plan under policy_a.")
    plans_b: dict[str, int] = Field(description="Patients per final plan under policy_b.")
    cross_table: dict[str, dict[str, int]] = Field(
        description="cross_table[plan under a][plan under b] = patients (every plan listed)."
    )
    disagreeing_rows: list[int] = Field(description="Row indices (0-based) where plans differ.")

    def to_text(self) -> str:
        """A plain-text table: plans under each policy and the disagreement count."""
        width = max(len(p) for p in PLANS)
        lines = [f"{'plan':<{width}}  {self.policy_a:>18}  {self.policy_b:>18}"]
        lines += [f"{p:<{width}}  {self.plans_a[p]:>18}  {self.plans_b[p]:>18}" for p in PLANS]
        lines.append(
            f"disagree on {self.n_disagree} of {self.n_patients} patients "
            f"({100.0 * self.disagreement_fraction:.1f} %)"
        )
        return "\n".join(lines)


def _rows(scores_table: ScoresTable) -> list[dict[str, float]]:
    """Rows of the four scores, from row mappings or from a mapping of columns."""
    if isinstance(scores_table, Mapping):
        missing = [m for m in MODELS if m not in scores_table]
        if missing:
            raise ScoreInputError(
                f"scores_table: column(s) {', '.join(missing)} missing; give one column per "
                f"model ({', '.join(MODELS)}) or one mapping per patient."
            )
        columns = {m: list(scores_table[m]) for m in MODELS}
        lengths = {len(c) for c in columns.values()}
        if len(lengths) != 1:
            raise ScoreInputError(
                "scores_table: the columns have different lengths "
                f"({', '.join(f'{m} {len(columns[m])}' for m in MODELS)}); give one score per "
                "patient in every column."
            )
        n = lengths.pop()
        return [{m: columns[m][i] for m in MODELS} for i in range(n)]
    rows: list[dict[str, float]] = []
    for i, row in enumerate(scores_table):
        if not isinstance(row, Mapping):
            raise ScoreInputError(
                f"scores_table row {i}: expected a mapping of model name to score, got "
                f"{type(row).__name__}."
            )
        missing = [m for m in MODELS if m not in row]
        if missing:
            raise ScoreInputError(
                f"scores_table row {i}: score(s) {', '.join(missing)} missing."
            )
        rows.append({m: row[m] for m in MODELS})  # other columns (ids, outcomes) are ignored
    return rows


def compare_policies(
    scores_table: ScoresTable,
    policy_a: AtomPolicy | None = None,
    policy_b: AtomPolicy | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> PolicyComparison:
    """Run two policies on every row of ``scores_table`` and tabulate where they disagree.

    ``scores_table`` is either one mapping per patient (keys TACE, HAIC, TC, HC; other keys
    are ignored) or one mapping of columns (model -> sequence of scores). Policies default to
    ``atom-v1`` and ``atom-v1-responder``; thresholds to the paper's MSS. A bad row raises
    :class:`~hccatom.errors.ScoreInputError` naming the row.
    """
    pa = policy_a if policy_a is not None else AtomPolicy.atom_v1()
    pb = policy_b if policy_b is not None else AtomPolicy.atom_v1_responder()
    plans_a = dict.fromkeys(PLANS, 0)
    plans_b = dict.fromkeys(PLANS, 0)
    cross = {p: dict.fromkeys(PLANS, 0) for p in PLANS}
    disagree: list[int] = []
    rows = _rows(scores_table)
    for i, row in enumerate(rows):
        try:
            a = decide(row, thresholds, pa).final_plan
            b = decide(row, thresholds, pb).final_plan
        except ScoreInputError as exc:
            raise ScoreInputError(f"scores_table row {i}: {exc}") from exc
        plans_a[a] += 1
        plans_b[b] += 1
        cross[a][b] += 1
        if a != b:
            disagree.append(i)
    n = len(rows)
    return PolicyComparison(
        policy_a=pa.policy_id,
        policy_b=pb.policy_id,
        n_patients=n,
        n_disagree=len(disagree),
        disagreement_fraction=len(disagree) / n if n else 0.0,
        plans_a=plans_a,
        plans_b=plans_b,
        cross_table=cross,
        disagreeing_rows=disagree,
    )


__all__ = ["PolicyComparison", "ScoresTable", "compare_policies"]
