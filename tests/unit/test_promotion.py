"""The promotion gate: per-metric tolerance on the holdout, extra evidence as checks."""

from __future__ import annotations

import pytest

from fraudops.experiments.promotion_gate import Check, decide, holdout_checks

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
