"""The promotion gate: per-metric tolerance on the holdout, segment gaps, extra evidence."""

from __future__ import annotations

import pytest

from fraudops.experiments.promotion_gate import Check, decide, fairness_check, holdout_checks

TOLERANCE = {"average_precision": 0.01, "card_precision_at_100": 0.005}
CHAMPION = {"average_precision": 0.60, "card_precision_at_100": 0.30, "roc_auc": 0.9}


def test_a_challenger_within_tolerance_is_promoted() -> None:
    challenger = {"average_precision": 0.595, "card_precision_at_100": 0.296, "roc_auc": 0.5}

    decision = decide(holdout_checks(CHAMPION, challenger, TOLERANCE))

    assert decision.promote
    assert decision.reason.startswith("challenger not worse")
    assert decision.numbers["champion.average_precision"] == 0.60
    assert decision.numbers["challenger.card_precision_at_100"] == 0.296
    assert decision.numbers["tolerance.average_precision"] == 0.01


def test_one_metric_beyond_its_tolerance_rejects_and_is_named() -> None:
    challenger = {"average_precision": 0.70, "card_precision_at_100": 0.29}

    decision = decide(holdout_checks(CHAMPION, challenger, TOLERANCE))

    assert not decision.promote
    assert "card_precision_at_100 0.2900 vs champion 0.3000" in decision.reason
    assert "average_precision" not in decision.reason


def test_failed_live_evidence_overrules_a_good_holdout() -> None:
    checks = holdout_checks(CHAMPION, CHAMPION, TOLERANCE)
    live = Check("A/B", passed=False, detail="A/B: no significant gain", numbers={"p": 0.4})

    decision = decide([*checks, live])

    assert not decision.promote
    assert decision.reason == "challenger worse: A/B: no significant gain"
    assert decision.numbers["p"] == 0.4


def test_an_unmeasured_gated_metric_is_an_error_not_a_pass() -> None:
    with pytest.raises(KeyError, match=r"card_precision_at_100.*challenger"):
        holdout_checks(CHAMPION, {"average_precision": 0.9}, TOLERANCE)
    with pytest.raises(ValueError, match="at least one check"):
        decide([])


def gap(segment: str, value: float | None, flagged: bool, name: str = "fpr_ratio") -> dict:
    """One row of `SegmentReport.gaps`, its interval around VALUE."""
    low, high = (None, None) if value is None else (value - 0.1, value + 0.1)
    return {
        "segment": segment,
        "gap": name,
        "value": value,
        "low": low,
        "high": high,
        "tolerance": 2.0,
        "flagged": flagged,
    }


def test_a_challenger_that_brings_a_flagged_gap_is_refused_and_the_gap_named() -> None:
    champion = [gap("tenure", 1.4, False), gap("region", 1.1, False)]
    challenger = [gap("tenure", 2.6, True), gap("region", 1.0, False)]

    check = fairness_check(champion, challenger)
    decision = decide([*holdout_checks(CHAMPION, CHAMPION, TOLERANCE), check])

    assert not check.passed and not decision.promote
    assert "tenure fpr_ratio 2.6 [2.5, 2.7] vs champion 1.4 (tolerance 2)" in decision.reason
    assert "region" not in check.detail
    assert check.numbers["challenger.tenure.fpr_ratio"] == 2.6
    assert check.numbers["champion.tenure.fpr_ratio"] == 1.4


def test_a_gap_the_champion_had_as_wide_does_not_refuse_the_challenger() -> None:
    champion = [gap("tenure", 2.9, True)]
    narrower = [gap("tenure", 2.7, True)]
    wider = [gap("tenure", 3.1, True)]

    assert fairness_check(champion, narrower).passed
    assert not fairness_check(champion, wider).passed


def test_a_gap_only_the_challenger_could_measure_counts_when_flagged() -> None:
    champion = [gap("spend_tier", None, False)]  # too few frauds in a group to compare

    assert not fairness_check(champion, [gap("spend_tier", 2.5, True)]).passed
    check = fairness_check(champion, [gap("spend_tier", 1.5, False)])
    assert check.passed and "1 compared" in check.detail
    assert "champion.spend_tier.fpr_ratio" not in check.numbers  # NaN is not a number to log


def test_an_infinite_ratio_is_not_a_gap_to_refuse_for() -> None:
    """A segment without a single false alarm makes the FPR ratio infinite: on a small
    holdout that was the stronger model, and the difference measure judges that gap."""
    infinite = gap("spend_tier", float("inf"), True)
    assert fairness_check([gap("spend_tier", 1.0, False)], [infinite]).passed
