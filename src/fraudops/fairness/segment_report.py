"""The fairness report of a set of decisions: per-segment metrics and gaps, with intervals.

One call for every consumer: training (the test period), monitoring (a window of logged
traffic), the promotion gate (champion and challenger on one holdout) and the A/B report
(one call per arm). Each passes the raw transactions the customers' history is read from,
the rows it decided on, and the decisions; `SegmentReport.flagged` is what an alarm or a
gate acts on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import NDArray

from fraudops.config import FairnessParams, Params
from fraudops.data.schema import CUSTOMER_ID, TRANSACTION_ID, TX_FRAUD
from fraudops.fairness.segment_metrics import (
    METRICS,
    Bootstrap,
    Costs,
    by_group,
    comparable_rates,
    customer_weights,
    gaps,
    group_counts,
    interval,
    rates,
    resampled_counts,
)
from fraudops.fairness.segments import SEGMENTS, SegmentRules, assign_segments

SEGMENT = "segment"
GROUP = "group"
GAP = "gap"


@dataclass(frozen=True)
class SegmentReport:
    """``table``: one row per segment value; ``gaps``: one row per segment column and gap.

    ``table`` has the sizes (transactions, customers, frauds, alerts) and each metric of
    `fraudops.fairness.segment_metrics.METRICS` with ``_low``/``_high`` interval bounds. ``gaps``
    has ``value``, ``low``, ``high``, the ``tolerance`` and ``flagged``: the whole interval
    lies beyond the tolerance.
    """

    table: pl.DataFrame
    gaps: pl.DataFrame

    @property
    def flagged(self) -> pl.DataFrame:
        """The gaps that are there beyond the noise: what an alarm or a gate acts on."""
        return self.gaps.filter(pl.col("flagged"))


def segment_report(
    history: pl.DataFrame, scored: pl.DataFrame, alerts: NDArray[np.bool_], params: Params
) -> SegmentReport:
    """The report on ALERTS, the decisions on the rows of SCORED, in order.

    HISTORY is raw transactions from the customers' first days through SCORED's (every
    row of SCORED among them); SCORED needs the transaction id, customer id and label.
    """
    if len(alerts) != scored.height:
        raise ValueError(f"{len(alerts)} decisions for {scored.height} scored transactions")
    segments = assign_segments(history, SegmentRules.of(params)).drop(CUSTOMER_ID)
    frame = scored.select(TRANSACTION_ID, CUSTOMER_ID, TX_FRAUD).join(
        segments, on=TRANSACTION_ID, how="left", maintain_order="left"
    )
    absent = frame[SEGMENTS[0]].null_count()
    if absent:
        raise ValueError(f"{absent} scored transactions are not in the history given")
    costs = Costs(params.train.cost_missed_fraud, params.train.cost_false_alarm)
    return report_on_segments(frame, np.asarray(alerts, dtype=bool), costs, params.fairness)


def report_on_segments(
    frame: pl.DataFrame, alerts: NDArray[np.bool_], costs: Costs, params: FairnessParams
) -> SegmentReport:
    """The report on FRAME (customer id, label and the segment columns) and its ALERTS."""
    _, customer = np.unique(frame[CUSTOMER_ID].to_numpy(), return_inverse=True)
    bootstrap = Bootstrap(params.bootstrap_resamples, params.confidence, params.seed)
    weights = customer_weights(int(customer.max()) + 1, bootstrap)
    y = frame[TX_FRAUD].to_numpy()
    tables, gap_rows = [], []
    for segment in SEGMENTS:
        groups = frame[segment].to_numpy().astype(str)
        counts, names = group_counts(customer, groups, y, alerts)
        draws = rates(resampled_counts(counts, weights), costs)
        point = by_group(y, alerts, groups, costs)
        tables.append(_segment_table(segment, names, counts, point, draws, params.confidence))
        gap_rows += _gap_rows(segment, names, counts, point, draws, params)
    return SegmentReport(pl.concat(tables), pl.DataFrame(gap_rows))


def _segment_table(
    segment: str,
    names: list[str],
    counts: NDArray[np.float64],
    point: pl.DataFrame,
    draws: dict[str, NDArray[np.float64]],
    confidence: float,
) -> pl.DataFrame:
    totals = counts.sum(axis=0)
    columns: dict[str, object] = {
        SEGMENT: [segment] * len(names),
        GROUP: names,
        "n_transactions": totals.sum(axis=1).astype(np.int64),
        "n_customers": (counts.sum(axis=2) > 0).sum(axis=0).astype(np.int64),
        "n_frauds": (totals[:, 0] + totals[:, 2]).astype(np.int64),
        "alerts": (totals[:, 0] + totals[:, 1]).astype(np.int64),
    }
    table = pl.DataFrame(columns).join(point, on=GROUP, how="left", maintain_order="left")
    bounds = {}
    for metric in METRICS:
        low_high = [interval(draws[metric][:, g], confidence) for g in range(len(names))]
        bounds[f"{metric}_low"] = [low for low, _ in low_high]
        bounds[f"{metric}_high"] = [high for _, high in low_high]
    order = [SEGMENT, GROUP, "n_transactions", "n_customers", "n_frauds", "alerts"]
    for metric in METRICS:
        order += [metric, f"{metric}_low", f"{metric}_high"]
    bound_frame = pl.DataFrame(bounds, schema=dict.fromkeys(bounds, pl.Float64))
    return pl.concat([table, bound_frame], how="horizontal").select(order)


def _gap_rows(
    segment: str,
    names: list[str],
    counts: NDArray[np.float64],
    point: pl.DataFrame,
    draws: dict[str, NDArray[np.float64]],
    params: FairnessParams,
) -> list[dict[str, object]]:
    in_order = pl.DataFrame({GROUP: names}).join(point, on=GROUP, how="left", maintain_order="left")

    def gaps_of(
        recall: NDArray[np.float64], fpr: NDArray[np.float64]
    ) -> dict[str, NDArray[np.float64]]:
        sizes = (counts, params.min_group_customers, params.min_group_frauds)
        return gaps(*comparable_rates(recall, fpr, *sizes))

    values = gaps_of(
        in_order["recall"].fill_null(np.nan).to_numpy().astype(float),
        in_order["false_positive_rate"].fill_null(np.nan).to_numpy().astype(float),
    )
    resampled = gaps_of(draws["recall"], draws["false_positive_rate"])
    tolerance = {
        "fpr_ratio": params.max_fpr_ratio,
        "equalized_odds_difference": params.max_equalized_odds_difference,
    }
    rows: list[dict[str, object]] = []
    for gap, limit in tolerance.items():
        low, high = interval(resampled[gap], params.confidence)
        rows.append(
            {
                SEGMENT: segment,
                GAP: gap,
                "value": float(values[gap]),
                "low": low,
                "high": high,
                "tolerance": limit,
                "flagged": low is not None and low > limit,
            }
        )
    return rows
