"""Metrics on hand-computed examples, and agreement with scikit-learn where it has them."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from fraudops.data.schema import CUSTOMER_ID, TX_DATETIME, TX_FRAUD
from fraudops.modeling.evaluation import (
    card_precision_at_k,
    choose_threshold,
    confusion_at,
    evaluate,
    expected_cost,
    ranking_metrics,
    recall_at_fpr,
)

pytestmark = pytest.mark.model


def arrays(*columns: list) -> list[np.ndarray]:
    return [np.asarray(column) for column in columns]


def test_card_precision_follows_the_handbook_rules() -> None:
    # k = 2. Day 1: card 1 (0.9, fraud), card 2 (max score 0.8; one of its tx is a fraud),
    # card 3 (0.7, fraud): top 2 = cards 1, 2, both compromised -> 2/2, both detected.
    # Day 2: cards 1 and 2 were detected and are left out; card 3 alone -> 1/2, not 1/1.
    y, score, card, day = arrays(
        [1, 0, 1, 1, 1, 1, 1],
        [0.9, 0.8, 0.1, 0.7, 0.95, 0.9, 0.6],
        [1, 2, 2, 3, 1, 2, 3],
        [1, 1, 1, 1, 2, 2, 2],
    )

    assert card_precision_at_k(y, score, card, day, k=2) == pytest.approx(0.75)


def test_card_precision_breaks_ties_by_lower_card_id_whatever_the_row_order() -> None:
    y, score, card, day = arrays([0, 1], [0.5, 0.5], [7, 3], [1, 1])

    assert card_precision_at_k(y, score, card, day, k=1) == 1.0
    assert card_precision_at_k(y[::-1], score[::-1], card[::-1], day, k=1) == 1.0
    assert card_precision_at_k(y, score, np.array([3, 7]), day, k=1) == 0.0


def handbook_card_precision(frame: pd.DataFrame, k: int) -> float:
    """The handbook's pandas implementation, for scores without ties."""
    detected: list[int] = []
    per_day = []
    for current in sorted(frame.day.unique()):
        rows = frame[(frame.day == current) & ~frame.card.isin(detected)]
        cards = rows.groupby("card")[["score", "y"]].max().sort_values("score", ascending=False)
        top = cards.head(k)
        hits = list(top[top.y == 1].index)
        per_day.append(len(hits) / k)
        detected.extend(hits)
    return float(np.mean(per_day))


def test_card_precision_matches_the_handbook_implementation_on_random_data() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    frame = pd.DataFrame(
        {
            "y": (rng.random(n) < 0.05).astype(int),
            "score": rng.random(n),
            "card": rng.integers(0, 400, n),
            "day": rng.integers(0, 5, n),
        }
    )
    frame["score"] += frame.y * rng.random(n)  # frauds rank higher, so cards get detected

    ours = card_precision_at_k(*arrays(frame.y, frame.score, frame.card, frame.day), k=20)

    assert ours == pytest.approx(handbook_card_precision(frame, k=20))
    assert 0 < ours < 1


def test_threshold_metrics_on_a_hand_example() -> None:
    y, score = arrays([1, 0, 1, 0, 0], [0.9, 0.8, 0.7, 0.3, 0.1])

    counts = confusion_at(y, score, 0.75)

    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (1, 1, 1, 2)
    alert = score >= 0.75
    assert counts.precision == pytest.approx(precision_score(y, alert))
    assert counts.recall == pytest.approx(recall_score(y, alert))
    assert counts.f1 == pytest.approx(f1_score(y, alert))
    assert confusion_at(y, score, 0.95).precision == 0.0  # no alert, no division by zero


@pytest.mark.parametrize(
    ("cost_missed", "cost_alarm", "expected"),
    [
        # costs by threshold: none 20, >=.9 10, >=.8 13, >=.7 3, >=.3 6, >=.1 9
        (10.0, 3.0, 0.7),
        # false alarms dear: none 20, >=.9 10, >=.8 110, >=.7 100
        (10.0, 100.0, 0.9),
    ],
)
def test_choose_threshold_minimises_the_expected_cost(
    cost_missed: float, cost_alarm: float, expected: float
) -> None:
    y, score = arrays([1, 0, 1, 0, 0], [0.9, 0.8, 0.7, 0.3, 0.1])

    threshold = choose_threshold(y, score, cost_missed, cost_alarm)

    assert threshold == expected
    best = expected_cost(
        y, score, threshold, cost_missed_fraud=cost_missed, cost_false_alarm=cost_alarm
    )
    for other in [*score, 1.0]:
        cost = expected_cost(
            y, score, other, cost_missed_fraud=cost_missed, cost_false_alarm=cost_alarm
        )
        assert best <= cost


def test_choose_threshold_can_alert_on_nothing_and_treats_ties_as_one() -> None:
    y, score = arrays([1, 0, 0], [0.5, 0.5, 0.2])

    silent = choose_threshold(y, score, cost_missed_fraud=1.0, cost_false_alarm=5.0)
    assert silent > 0.5
    assert confusion_at(y, score, silent).tp + confusion_at(y, score, silent).fp == 0
    assert choose_threshold(y, score, cost_missed_fraud=10.0, cost_false_alarm=5.0) == 0.5


def test_expected_cost_is_per_transaction() -> None:
    y, score = arrays([1, 0, 1, 0, 0], [0.9, 0.8, 0.7, 0.3, 0.1])

    cost = expected_cost(y, score, 0.75, cost_missed_fraud=10.0, cost_false_alarm=3.0)

    assert cost == pytest.approx((10.0 + 3.0) / 5)


def test_recall_at_one_percent_false_positive_rate() -> None:
    negatives = np.arange(200) / 1000  # 0.000 .. 0.199; 2 false alarms = 1 % of 200
    positives = np.array([0.9] * 4 + [0.1985, 0.1975] + [0.05] * 4)
    y = np.r_[np.zeros(200), np.ones(10)]

    # 0.1975 is reached with two false alarms (0.199, 0.198); the next positives need more.
    assert recall_at_fpr(y, np.r_[negatives, positives], 0.01) == pytest.approx(0.6)
    assert recall_at_fpr(y, np.r_[negatives, positives], 0.0) == pytest.approx(0.4)


def scored_frame(n: int, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(np.int8)
    start = dt.datetime(2018, 8, 8)
    frame = pl.DataFrame(
        {
            TX_DATETIME: [start + dt.timedelta(hours=int(h)) for h in rng.integers(0, 72, n)],
            CUSTOMER_ID: rng.integers(0, 100, n),
            TX_FRAUD: y,
        }
    )
    return frame, rng.random(n) + y * rng.random(n)


def test_ranking_metrics_agree_with_sklearn() -> None:
    frame, score = scored_frame(500, seed=3)
    y = frame[TX_FRAUD].to_numpy()

    metrics = ranking_metrics(frame, score, k=10)

    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, score))
    assert metrics["average_precision"] == pytest.approx(average_precision_score(y, score))
    assert 0 < metrics["card_precision_at_10"] <= 1


def test_evaluate_reports_every_metric_under_stable_names() -> None:
    frame, score = scored_frame(500, seed=4)

    metrics = evaluate(frame, score, threshold=0.8, cost_missed_fraud=100, cost_false_alarm=5)

    assert set(metrics) == {
        "roc_auc",
        "average_precision",
        "card_precision_at_100",
        "recall_at_1pct_fpr",
        "threshold",
        "precision",
        "recall",
        "f1",
        "expected_cost",
        "alerts",
        "n_transactions",
        "n_frauds",
    }
    assert all(isinstance(value, float) for value in metrics.values())
    assert metrics["n_transactions"] == 500
    assert metrics["n_frauds"] == frame[TX_FRAUD].sum()
