"""Per-segment metrics, gaps and their bootstrap intervals, on hand-made decisions."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from fairlearn.metrics import MetricFrame, equalized_odds_difference, false_positive_rate

from fraudops.config import FairnessParams
from fraudops.data.schema import CUSTOMER_ID, TX_FRAUD
from fraudops.fairness.segment_metrics import Costs, by_group, gaps
from fraudops.fairness.segment_report import SegmentReport, report_on_segments
from fraudops.fairness.segments import SEGMENTS

COSTS = Costs(missed_fraud=100.0, false_alarm=5.0)


def test_per_group_metrics_equal_a_hand_computation() -> None:
    # Group a: tp 1, fp 1, fn 1, tn 1. Group b: tp 0, fp 1, fn 0, tn 3 (no fraud).
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0])
    alert = np.array([1, 1, 0, 0, 1, 0, 0, 0], dtype=bool)
    groups = np.array(["a"] * 4 + ["b"] * 4)
    table = by_group(y, alert, groups, COSTS).to_dicts()
    assert table[0] == pytest.approx(
        {
            "group": "a",
            "recall": 0.5,
            "false_positive_rate": 0.5,
            "precision": 0.5,
            "alert_rate": 0.5,
            "expected_cost": (100.0 + 5.0) / 4,
        }
    )
    assert table[1]["group"] == "b" and table[1]["recall"] is None  # undefined: no fraud
    assert table[1]["false_positive_rate"] == pytest.approx(0.25)
    assert table[1]["precision"] == 0.0 and table[1]["expected_cost"] == pytest.approx(5.0 / 4)


def test_gaps_agree_with_fairlearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(3000) < 0.2
    groups = rng.choice(["a", "b", "c"], size=3000)
    alert = rng.random(3000) < np.where(groups == "a", 0.3, 0.1) + 0.4 * y
    rates = MetricFrame(
        metrics={"tpr": lambda t, p: np.mean(p[t == 1]), "fpr": false_positive_rate},
        y_true=y,
        y_pred=alert,
        sensitive_features=groups,
    ).by_group
    ours = gaps(rates["tpr"].to_numpy(), rates["fpr"].to_numpy())
    assert ours["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(y, alert, sensitive_features=groups)
    )
    assert ours["fpr_ratio"] == pytest.approx(rates["fpr"].max() / rates["fpr"].min())
    assert ours["fpr_ratio"] > 2


def test_a_gap_needs_two_comparable_groups() -> None:
    result = gaps(np.array([0.5, np.nan]), np.array([0.1, np.nan]))
    assert np.isnan(result["fpr_ratio"]) and np.isnan(result["equalized_odds_difference"])


def decisions(
    fpr: dict[str, float], customers: dict[str, int], seed: int = 0
) -> tuple[pl.DataFrame, np.ndarray]:
    """Ten genuine payments and one fraud per customer; frauds all caught, FPR per group."""
    rng = np.random.default_rng(seed)
    frames, alerts, first = [], [], 0
    for group, count in customers.items():
        ids = np.repeat(np.arange(first, first + count), 11)
        fraud = np.tile([1] + [0] * 10, count)
        frames.append(
            pl.DataFrame({CUSTOMER_ID: ids, TX_FRAUD: fraud}).with_columns(
                *(pl.lit(group).alias(segment) for segment in SEGMENTS)
            )
        )
        alerts.append((fraud == 1) | (rng.random(len(ids)) < fpr[group]))
        first += count
    return pl.concat(frames), np.concatenate(alerts)


def report_of(frame: pl.DataFrame, alerts: np.ndarray) -> SegmentReport:
    params = FairnessParams(bootstrap_resamples=400, confidence=0.9, min_group_customers=10)
    return report_on_segments(frame, alerts, COSTS, params)


def test_the_interval_covers_the_truth_and_is_wide_for_a_tiny_segment() -> None:
    frame, alerts = decisions({"big": 0.05, "tiny": 0.05}, {"big": 2000, "tiny": 12})
    table = report_of(frame, alerts).table.filter(pl.col("segment") == "tenure")
    big, tiny = (table.row(by_predicate=pl.col("group") == g, named=True) for g in ("big", "tiny"))
    assert big["false_positive_rate_low"] < 0.05 < big["false_positive_rate_high"]
    assert big["false_positive_rate_high"] - big["false_positive_rate_low"] < 0.01
    width = tiny["false_positive_rate_high"] - tiny["false_positive_rate_low"]
    assert width > 5 * (big["false_positive_rate_high"] - big["false_positive_rate_low"])
    assert big["n_customers"] == 2000 and big["n_transactions"] == 22000


def test_a_real_gap_is_flagged_and_noise_in_a_small_segment_is_not() -> None:
    real, alerts = decisions({"a": 0.02, "b": 0.10}, {"a": 1000, "b": 1000})
    flagged = report_of(real, alerts).flagged
    assert set(flagged["gap"]) == {"fpr_ratio"}  # recall is 1 for both: no odds gap beyond FPR's
    assert len(flagged) == len(SEGMENTS)
    noise, alerts = decisions({"a": 0.05, "small": 0.05}, {"a": 1000, "small": 12}, seed=3)
    report = report_of(noise, alerts)
    assert report.flagged.is_empty()
    ratio = report.gaps.row(0, named=True)
    assert ratio["gap"] == "fpr_ratio" and ratio["high"] > 2  # the noise is visible, not a finding
