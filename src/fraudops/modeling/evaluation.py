"""Metrics of a fraud scorer, as the handbook defines them, plus a cost-based threshold.

Ranking metrics (ROC AUC, average precision, card precision@k) judge the scores alone.
Card precision@k is the one closest to operations: investigators check `k` cards a day,
so what counts is how many of those cards are really compromised. Threshold metrics
judge a decision rule "alert when score >= threshold", whose threshold comes from the
cost model: a missed fraud costs far more than a false alarm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from fraudops.data.schema import CUSTOMER_ID, TX_DATETIME, TX_FRAUD

#: False-positive rate budget of `recall_at_fpr` in `evaluate`.
ALERT_FPR_BUDGET = 0.01


@dataclass(frozen=True)
class Confusion:
    """Counts of the decisions "alert when score >= threshold"."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def confusion_at(y: np.ndarray, score: np.ndarray, threshold: float) -> Confusion:
    """Confusion counts when every transaction with score >= threshold raises an alert."""
    alert = score >= threshold
    fraud = y == 1
    return Confusion(
        tp=int(np.sum(alert & fraud)),
        fp=int(np.sum(alert & ~fraud)),
        fn=int(np.sum(~alert & fraud)),
        tn=int(np.sum(~alert & ~fraud)),
    )


def card_precision_at_k(
    y: np.ndarray, score: np.ndarray, customer_id: np.ndarray, day: np.ndarray, k: int = 100
) -> float:
    """Mean over days of the share of truly compromised cards among the day's top k cards.

    Per day, in date order: cards already detected (a fraudulent card in an earlier day's
    top k) are left out; each card gets its highest score and label of the day; the k
    best-scored cards are checked, and the hits are divided by k even when fewer cards
    were scored. Ties in score go to the lower customer id, so the result does not
    depend on row order (the handbook's unstable sort leaves ties arbitrary).
    """
    if len(y) == 0:
        raise ValueError("card precision needs at least one transaction")
    detected = np.empty(0, dtype=customer_id.dtype)
    per_day = []
    for current in np.unique(day):
        rows = (day == current) & ~np.isin(customer_id, detected)
        cards, card_of_row = np.unique(customer_id[rows], return_inverse=True)
        card_score = np.full(len(cards), -np.inf)
        np.maximum.at(card_score, card_of_row, score[rows])
        card_fraud = np.zeros(len(cards), dtype=bool)
        np.logical_or.at(card_fraud, card_of_row, y[rows] == 1)
        top = np.lexsort((cards, -card_score))[:k]
        hits = cards[top][card_fraud[top]]
        per_day.append(len(hits) / k)
        detected = np.concatenate([detected, hits])
    return float(np.mean(per_day))


def recall_at_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float = ALERT_FPR_BUDGET) -> float:
    """The highest recall of any threshold whose false-positive rate is at most `max_fpr`."""
    fpr, tpr, _ = roc_curve(y, score, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr].max())


def expected_cost(
    y: np.ndarray,
    score: np.ndarray,
    threshold: float,
    *,
    cost_missed_fraud: float,
    cost_false_alarm: float,
) -> float:
    """Mean cost per transaction of alerting at `threshold`: missed frauds plus false alarms."""
    counts = confusion_at(y, score, threshold)
    return (counts.fn * cost_missed_fraud + counts.fp * cost_false_alarm) / len(y)


def choose_threshold(
    y: np.ndarray, score: np.ndarray, cost_missed_fraud: float, cost_false_alarm: float
) -> float:
    """The alert threshold of least expected cost on (y, score).

    Candidates are every distinct score (alert on it and above) and one just above the
    highest score (alert on nothing). Among equal costs the highest threshold wins: the
    same cost with fewer alerts to review.
    """
    order = np.argsort(-score, kind="stable")
    ranked_score, ranked_fraud = score[order], y[order] == 1
    caught = np.cumsum(ranked_fraud)
    false_alarms = np.cumsum(~ranked_fraud)
    group_ends = np.r_[np.flatnonzero(np.diff(ranked_score)), len(score) - 1]
    missed = caught[-1] - caught[group_ends]
    costs = np.r_[
        caught[-1] * cost_missed_fraud,
        missed * cost_missed_fraud + false_alarms[group_ends] * cost_false_alarm,
    ]
    thresholds = np.r_[np.nextafter(ranked_score[0], np.inf), ranked_score[group_ends]]
    return float(thresholds[np.argmin(costs)])


def labels_and_cards(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraud labels, card ids and calendar days of a frame, as card precision needs them."""
    return (
        frame[TX_FRAUD].to_numpy(),
        frame[CUSTOMER_ID].to_numpy(),
        frame[TX_DATETIME].dt.date().to_numpy(),
    )


def ranking_metrics(frame: pl.DataFrame, score: np.ndarray, k: int = 100) -> dict[str, float]:
    """Threshold-free metrics of `score` on the transactions of `frame`."""
    y, cards, days = labels_and_cards(frame)
    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "average_precision": float(average_precision_score(y, score)),
        f"card_precision_at_{k}": card_precision_at_k(y, score, cards, days, k),
    }


def evaluate(
    frame: pl.DataFrame,
    score: np.ndarray,
    *,
    threshold: float,
    cost_missed_fraud: float,
    cost_false_alarm: float,
    k: int = 100,
) -> dict[str, float]:
    """Every metric of `score` on `frame`, under stable names for logging and comparison."""
    y = frame[TX_FRAUD].to_numpy()
    counts = confusion_at(y, score, threshold)
    return {
        **ranking_metrics(frame, score, k),
        "recall_at_1pct_fpr": recall_at_fpr(y, score, ALERT_FPR_BUDGET),
        "threshold": threshold,
        "precision": counts.precision,
        "recall": counts.recall,
        "f1": counts.f1,
        "expected_cost": expected_cost(
            y,
            score,
            threshold,
            cost_missed_fraud=cost_missed_fraud,
            cost_false_alarm=cost_false_alarm,
        ),
        "alerts": float(counts.tp + counts.fp),
        "n_transactions": float(len(y)),
        "n_frauds": float(counts.tp + counts.fn),
    }
