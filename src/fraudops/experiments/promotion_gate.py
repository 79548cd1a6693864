"""The gate between challenger and champion: evidence as checks, one decision.

The first evidence is offline: both models scored on the same holdout (the final test
period of the current data), metric by metric. A challenger may fall short of the champion
by at most the metric's tolerance (``promote.tolerance`` in params.yaml): retraining on
newer data is worth a hair of measured quality, not more.

Live evidence (an A/B test, agreement with the champion in shadow) enters as further
`Check` objects built by its own code; the decision is simply that every check passes, so
adding a kind of evidence never changes how the others are judged.
"""

from __future__ import annotations

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


def decide(checks: Sequence[Check]) -> GateDecision:
    return GateDecision(tuple(checks))
