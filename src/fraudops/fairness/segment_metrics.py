"""Per-segment decision quality, the gaps between segments, and how sure we are of both.

Point estimates come from fairlearn's `MetricFrame` (one row per segment value). The
intervals come from a customer-cluster bootstrap: frauds cluster on compromised cards,
so customers, not transactions, are resampled, as in the A/B report
(`fraudops.experiments.ab_statistics`). A small segment then gets a wide interval, and a
gap is flagged only when its whole interval lies beyond the tolerance: noise in a
segment of forty customers is not called bias.

Gaps, per segment column: ``fpr_ratio`` is the highest false-positive rate of its values
over the lowest (how many times more often one group's genuine payments are declined);
``equalized_odds_difference`` is fairlearn's between-groups worst case, the larger of the
spreads of recall (true-positive rate) and of false-positive rate.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import polars as pl
from fairlearn.metrics import MetricFrame  # type: ignore[import-untyped]
from numpy.typing import NDArray

from fraudops.experiments.ab_statistics import cluster_resample_counts

#: Per-segment metrics, in table order; each is undefined (NaN) where its denominator is 0.
METRICS = ("recall", "false_positive_rate", "precision", "alert_rate", "expected_cost")
#: Gaps between the values of one segment column.
GAPS = ("fpr_ratio", "equalized_odds_difference")
_RESAMPLE_BLOCK = 100
_TP, _FP, _FN, _TN = range(4)


@dataclass(frozen=True)
class Costs:
    """The cost model of `fraudops.modeling.evaluation.expected_cost`."""

    missed_fraud: float
    false_alarm: float


@dataclass(frozen=True)
class Bootstrap:
    """How the intervals are drawn."""

    resamples: int
    confidence: float
    seed: int


def by_group(
    y: NDArray[np.int_], alert: NDArray[np.bool_], groups: NDArray[np.str_], costs: Costs
) -> pl.DataFrame:
    """Each metric of METRICS per value of GROUPS, with fairlearn's `MetricFrame`.

    MetricFrame computes one metric, the confusion counts, and METRICS follow from them
    (`rates`): it converts its inputs element by element for every metric it is given,
    so asking it for the five metrics took five times as long, most of a report's time.
    """
    frame = MetricFrame(
        metrics=_counts,
        y_true=np.asarray(y, dtype=np.int64),
        y_pred=np.asarray(alert, dtype=np.int64),
        sensitive_features=np.asarray(groups),
    )
    counts = np.vstack(frame.by_group.to_numpy())
    names = [str(name) for name in frame.by_group.index]
    return pl.DataFrame({"group": names, **rates(counts, costs)}).fill_nan(None).sort("group")


def _counts(y: NDArray[np.int64], alert: NDArray[np.int64]) -> NDArray[np.float64]:
    fraud, flagged = y == 1, alert == 1
    return np.array(
        [
            np.sum(flagged & fraud),
            np.sum(flagged & ~fraud),
            np.sum(~flagged & fraud),
            np.sum(~flagged & ~fraud),
        ],
        dtype=np.float64,
    )


def rates(counts: NDArray[np.float64], costs: Costs) -> dict[str, NDArray[np.float64]]:
    """METRICS from confusion counts (last axis: tp, fp, fn, tn), elementwise over the rest."""
    tp, fp, fn, tn = (counts[..., k] for k in (_TP, _FP, _FN, _TN))
    n = tp + fp + fn + tn
    return {
        "recall": _ratio(tp, tp + fn),
        "false_positive_rate": _ratio(fp, fp + tn),
        "precision": _ratio(tp, tp + fp),
        "alert_rate": _ratio(tp + fp, n),
        "expected_cost": _ratio(fn * costs.missed_fraud + fp * costs.false_alarm, n),
    }


def _ratio(top: NDArray[np.float64], bottom: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bottom > 0, top / bottom, np.nan)


def gaps(recall: NDArray[np.float64], fpr: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
    """GAPS over the last axis (the groups); groups where a rate is NaN are left out.

    A gap needs two groups with the rate defined, else it is NaN. ``fpr_ratio`` is
    infinite when some group has no false positives and another has.
    """
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All-NaN slice", category=RuntimeWarning)
        high, low = np.nanmax(fpr, axis=-1), np.nanmin(fpr, axis=-1)
        ratio = np.where(high > 0, high / low, 1.0)
        spread = np.fmax(_spread(recall), _spread(fpr))
    comparable = (~np.isnan(fpr)).sum(axis=-1) >= 2
    return {
        "fpr_ratio": np.where(comparable, ratio, np.nan),
        "equalized_odds_difference": np.where(comparable, spread, np.nan),
    }


def _spread(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Max minus min over the groups; NaN unless two groups have a value."""
    spread = np.nanmax(values, axis=-1) - np.nanmin(values, axis=-1)
    defined: NDArray[np.float64] = np.where((~np.isnan(values)).sum(axis=-1) >= 2, spread, np.nan)
    return defined


def comparable_rates(
    recall: NDArray[np.float64],
    fpr: NDArray[np.float64],
    counts: NDArray[np.float64],
    min_customers: int,
    min_frauds: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """RECALL and FPR (..., groups) with groups too small to compare set to NaN.

    A group of fewer than MIN_CUSTOMERS customers is left out of both; one with fewer
    than MIN_FRAUDS frauds out of recall: the percentile bootstrap of 0 hits in 4 frauds
    is the single value 0, an interval that claims a certainty four frauds cannot give.
    COUNTS is customers x groups x 4, as `group_counts` returns.
    """
    customers = (counts.sum(axis=2) > 0).sum(axis=0)
    frauds = counts[:, :, _TP].sum(axis=0) + counts[:, :, _FN].sum(axis=0)
    large = customers >= min_customers
    return (
        np.where(large & (frauds >= min_frauds), recall, np.nan),
        np.where(large, fpr, np.nan),
    )


def group_counts(
    customer: NDArray[np.int_],
    groups: NDArray[np.str_],
    y: NDArray[np.int_],
    alert: NDArray[np.bool_],
) -> tuple[NDArray[np.float64], list[str]]:
    """Confusion counts per (customer, group): customers x groups x 4, and the group names.

    CUSTOMER holds cluster indices 0..n-1.
    """
    names, group_index = np.unique(np.asarray(groups), return_inverse=True)
    cell = np.where(alert, 0, 2) + np.where(np.asarray(y) == 1, 0, 1)
    counts = np.zeros((int(customer.max()) + 1, len(names), 4))
    np.add.at(counts, (customer, group_index, cell), 1.0)
    return counts, [str(name) for name in names]


def resampled_counts(
    counts: NDArray[np.float64], weights: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Group counts of each resample: WEIGHTS (resamples x customers) applied to COUNTS."""
    resampled: NDArray[np.float64] = np.einsum("bc,cgk->bgk", weights, counts)
    return resampled


def customer_weights(customers: int, bootstrap: Bootstrap) -> NDArray[np.int64]:
    """How often each customer is drawn in each resample (resamples x customers)."""
    rng = np.random.default_rng(bootstrap.seed)
    blocks = cluster_resample_counts(rng, customers, bootstrap.resamples, _RESAMPLE_BLOCK)
    return np.vstack(list(blocks))


def interval(draws: NDArray[np.float64], confidence: float) -> tuple[float | None, float | None]:
    """The percentile interval of DRAWS, leaving out resamples where the value is undefined.

    Quantiles are read off the sorted draws without interpolation, so infinite ratios
    (a group with no false positives) stay infinite instead of turning into NaN.
    """
    defined = draws[~np.isnan(draws)]
    if defined.size == 0:
        return None, None
    tail = (1 - confidence) / 2
    low, high = np.quantile(defined, [tail, 1 - tail], method="inverted_cdf")
    return float(low), float(high)
