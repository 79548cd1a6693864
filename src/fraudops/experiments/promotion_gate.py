"""The gate between challenger and champion: evidence as checks, one decision.

The first evidence is offline: both models scored on the same holdout (the final test
period of the current data), metric by metric. A challenger may fall short of the champion
by at most the metric's tolerance (``promote.tolerance`` in params.yaml): retraining on
newer data is worth a hair of measured quality, not more.

The holdout also says how evenly each model's errors fall on customer segments
(`fraudops.fairness.segment_report`): a challenger may not bring a gap between segments
beyond its tolerance, or widen one the champion already had there (`fairness_checks`).

Live evidence (an A/B test, agreement with the champion in shadow) enters as further
`Check` objects built by its own code; the decision is simply that every check passes, so
adding a kind of evidence never changes how the others are judged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Check:
    """One piece of evidence: whether it favours promotion, why, and the numbers behind it."""

    name: str
    passed: bool
    detail: str
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GateDecision:
    """Promote exactly when every check passed."""

    checks: tuple[Check, ...]

    def __post_init__(self) -> None:
        if not self.checks:
            raise ValueError("a promotion decision needs at least one check")

    @property
    def promote(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def reason(self) -> str:
        """The failed checks when rejected (they are what to fix), every check when promoted."""
        shown = [check for check in self.checks if not check.passed] or self.checks
        verdict = "challenger not worse" if self.promote else "challenger worse"
        return f"{verdict}: " + "; ".join(check.detail for check in shown)

    @property
    def numbers(self) -> dict[str, float]:
        merged: dict[str, float] = {}
        for check in self.checks:
            merged |= check.numbers
        return merged


def holdout_checks(
    champion: Mapping[str, float],
    challenger: Mapping[str, float],
    tolerance: Mapping[str, float],
) -> list[Check]:
    """One check per gated metric (higher is better): challenger >= champion - tolerance."""
    checks = []
    for metric, allowed in tolerance.items():
        missing = [
            side
            for side, values in (("champion", champion), ("challenger", challenger))
            if metric not in values
        ]
        if missing:
            raise KeyError(f"gated metric {metric!r} was not measured for the {missing[0]}")
        old, new = champion[metric], challenger[metric]
        checks.append(
            Check(
                name=f"holdout {metric}",
                passed=new >= old - allowed,
                detail=f"{metric} {new:.4f} vs champion {old:.4f} (tolerance {allowed:g})",
                numbers={
                    f"champion.{metric}": old,
                    f"challenger.{metric}": new,
                    f"tolerance.{metric}": allowed,
                },
            )
        )
    return checks


def fairness_check(
    champion: Sequence[Mapping[str, object]], challenger: Sequence[Mapping[str, object]]
) -> Check:
    """Whether the challenger leaves every segment gap no wider than the champion's, given
    both models' gap rows (`SegmentReport.gaps` on the same holdout).

    A gap counts against the challenger when it is flagged (its whole bootstrap interval
    lies beyond the tolerance, so it is not noise) and is wider than the champion's same
    gap: a gap the champion had as wide is not the challenger's doing, and refusing for it
    would keep a model with the same fault in service. An infinite ratio (a group without
    a single false alarm) is not a width to compare: the equalised-odds difference of the
    same segment still measures that gap, on a scale where zero is a number.
    """
    before = {(str(row["segment"]), str(row["gap"])): _number(row["value"]) for row in champion}
    widened: list[str] = []
    numbers: dict[str, float] = {}
    for row in challenger:
        key = (str(row["segment"]), str(row["gap"]))
        value, old = _number(row["value"]), before.get(key, math.nan)
        numbers |= {
            f"{role}.{key[0]}.{key[1]}": number
            for role, number in (("champion", old), ("challenger", value))
            if math.isfinite(number)
        }
        if row["flagged"] and math.isfinite(value) and not old >= value:
            widened.append(
                f"{key[0]} {key[1]} {value:.3g} [{_number(row['low']):.3g}, "
                f"{_number(row['high']):.3g}] vs champion {old:.3g} "
                f"(tolerance {_number(row['tolerance']):g})"
            )
    detail = (
        "segment gaps widened beyond tolerance: " + "; ".join(widened)
        if widened
        else f"no segment gap widened beyond its tolerance ({len(challenger)} compared)"
    )
    return Check("fairness", passed=not widened, detail=detail, numbers=numbers)


def _number(value: object) -> float:
    """A gap table's number; None (not measured: too few customers or frauds) is NaN."""
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def decide(checks: Sequence[Check]) -> GateDecision:
    return GateDecision(tuple(checks))
