"""One A/B arm's labelled transactions: its fraud metrics and their customer bootstrap.

The metrics are the ones the A/B report compares. Precision, recall and fraud caught per
1,000 transactions are ratios of per-customer sums, so the delta method applies to them;
average precision and card precision@k are not, so only the bootstrap speaks for them.
Every metric is drawn on the same customer resamples, so their draws are jointly
consistent. Pure: a prediction-log frame or arrays in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.metrics import average_precision_score

from fraudops.config import ProportionMetric
from fraudops.experiments.ab_statistics import (
    RatioSums,
    cluster_resample_counts,
    weighted_average_precision,
)
from fraudops.modeling.evaluation import card_precision_at_k

MetricName = Literal[ProportionMetric, "average_precision", "card_precision_at_k"]
METRICS: tuple[MetricName, ...] = get_args(MetricName)
PROPORTION_METRICS: tuple[ProportionMetric, ...] = get_args(ProportionMetric)

# Columns of an arm's per-customer sums; every proportion metric is true positives over one.
_TP, _ALERTS, _FRAUDS, _TRANSACTIONS = range(4)
_DENOMINATOR: dict[ProportionMetric, int] = {
    "precision": _ALERTS,
    "recall": _FRAUDS,
    "fraud_caught_per_1000": _TRANSACTIONS,
}
_SCALE: dict[ProportionMetric, float] = {"fraud_caught_per_1000": 1000.0}
_CELLS_PER_BLOCK = 4_000_000  # resamples x rows held in memory at once (~32 MB of floats)


@dataclass(frozen=True)
class ArmSample:
    """One arm's labelled transactions, with customers coded 0..C-1 (the resampled unit)."""

    label: NDArray[np.int8]
    score: NDArray[np.float64]
    alert: NDArray[np.bool_]
    customer: NDArray[np.int64]
    day: NDArray[np.datetime64]
    card_k: int

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, card_k: int) -> ArmSample:
        """The labelled rows of a prediction-log frame; unlabelled ones are not evidence yet."""
        labelled = frame[frame["label"].notna()]
        customer, _ = pd.factorize(labelled["customer_hash"])
        return cls(
            label=labelled["label"].to_numpy(dtype=np.int8),
            score=labelled["score"].to_numpy(dtype=float),
            alert=labelled["decision"].to_numpy(dtype=bool),
            customer=customer.astype(np.int64),
            day=pd.to_datetime(labelled["tx_datetime"]).to_numpy().astype("datetime64[D]"),
            card_k=card_k,
        )

    @property
    def transactions(self) -> int:
        return len(self.label)

    @property
    def customers(self) -> int:
        return int(self.customer.max()) + 1 if len(self.customer) else 0

    @property
    def frauds(self) -> int:
        return int(self.customer_sums[:, _FRAUDS].sum())

    @property
    def alerts(self) -> int:
        return int(self.customer_sums[:, _ALERTS].sum())

    @cached_property
    def customer_sums(self) -> NDArray[np.float64]:
        """Per customer: true positives, alerts, frauds, transactions (see ``_TP`` etc.)."""
        fraud = self.label == 1
        parts = (self.alert & fraud, self.alert, fraud, np.ones_like(fraud))
        return np.column_stack(
            [np.bincount(self.customer, part, minlength=self.customers) for part in parts]
        )

    def ratio_sums(self, metric: ProportionMetric) -> RatioSums:
        sums = self.customer_sums
        return RatioSums.of(sums[:, _TP], sums[:, _DENOMINATOR[metric]])

    def estimate(self, metric: MetricName) -> float | None:
        """The metric on this arm's data; None where it is undefined (no fraud, no alert)."""
        if metric in PROPORTION_METRICS:
            totals = self.customer_sums.sum(axis=0)
            denominator = totals[_DENOMINATOR[metric]]
            if denominator == 0:
                return None
            return float(totals[_TP] / denominator * _SCALE.get(metric, 1.0))
        if not self.label.any():
            return None
        if metric == "average_precision":
            return float(average_precision_score(self.label, self.score))
        return card_precision_at_k(self.label, self.score, self.customer, self.day, self.card_k)

    def draws(
        self, rng: np.random.Generator, resamples: int, metrics: Collection[MetricName] = METRICS
    ) -> dict[MetricName, NDArray[np.float64]]:
        """Each metric on ``resamples`` customer-cluster bootstrap resamples of the arm.

        All metrics share the same resamples, so their draws are jointly consistent.
        """
        block = max(1, min(resamples, _CELLS_PER_BLOCK // max(self.transactions, 1)))
        parts: dict[MetricName, list[NDArray[np.float64]]] = {metric: [] for metric in metrics}
        for counts in cluster_resample_counts(rng, self.customers, resamples, block):
            for metric in metrics:
                parts[metric].append(self.resampled(metric, counts))
        return {metric: np.concatenate(values) for metric, values in parts.items()}

    def resampled(self, metric: MetricName, counts: NDArray[np.int64]) -> NDArray[np.float64]:
        """The metric on each resample given as per-customer draw counts (resamples x C)."""
        if metric in PROPORTION_METRICS:
            sums = counts @ self.customer_sums
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = sums[:, _TP] / sums[:, _DENOMINATOR[metric]]
            return ratio * _SCALE.get(metric, 1.0)
        if metric == "average_precision":
            return weighted_average_precision(self.label, self.score, counts[:, self.customer])
        return np.array([self._card_precision_of(row) for row in counts])

    def _card_precision_of(self, counts: NDArray[np.int64]) -> float:
        """Card precision of one resample: a customer drawn twice is two distinct cards."""
        days = self._card_days
        chosen = np.repeat(np.arange(self.customers), counts)
        sizes = days.sizes[chosen]
        card = np.repeat(np.arange(len(chosen)), sizes)
        within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        rows = np.repeat(days.starts[chosen], sizes) + within
        if not days.label[rows].any():
            return math.nan
        return card_precision_at_k(
            days.label[rows], days.score[rows], card, days.day[rows], self.card_k
        )

    @cached_property
    def _card_days(self) -> _CardDays:
        """One row per customer and day, with the day's highest score and any fraud.

        Card precision keeps only that much of a card's day, so resampling these rows
        gives the same values as resampling transactions, at a fraction of the cost.
        """
        grouped = (
            pd.DataFrame(
                {
                    "customer": self.customer,
                    "day": self.day,
                    "score": self.score,
                    "label": self.label,
                }
            )
            .groupby(["customer", "day"], sort=True)
            .max()
            .reset_index()
        )
        sizes = np.bincount(grouped["customer"], minlength=self.customers)
        return _CardDays(
            day=grouped["day"].to_numpy(),
            score=grouped["score"].to_numpy(),
            label=grouped["label"].to_numpy(),
            sizes=sizes,
            starts=np.cumsum(sizes) - sizes,
        )


@dataclass(frozen=True)
class _CardDays:
    """Card-day rows sorted by customer; ``starts``/``sizes`` locate each customer's rows."""

    day: NDArray[np.datetime64]
    score: NDArray[np.float64]
    label: NDArray[np.int8]
    sizes: NDArray[np.int64]
    starts: NDArray[np.int64]
