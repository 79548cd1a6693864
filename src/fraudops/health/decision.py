"""What a window of served traffic says about the model: the numbers and the decision.

A monitoring run compares a window of the prediction log (``current``) with the sample of
training data logged beside the model (``reference``). The drift statistics come from
Evidently (``monitoring/drift.py``) and the estimate from NannyML
(``monitoring/performance.py``); this module holds everything that is plain Python:
cleaning a window so those libraries never see a missing column or a NaN, the
classification quality of the labelled rows (with the metric definitions of
``fraudops.modeling.evaluation``, so they compare with the training run's own numbers), and the rule
that turns the numbers into one decision:

* ``insufficient_data`` — too few valid rows to say anything;
* ``data_drift`` — the inputs moved: enough features drifted, or the model's score did;
* ``concept_drift`` — the inputs did not move, but on the labelled rows the fraud rate
  moved or the model's quality decayed against its training-time values;
* ``none`` — neither.

Apart from the signal, a window whose labelled rows can be segmented gets the gaps
between customer segments (`fraudops.fairness`) and a *gap alarm* (`segment_gaps`) when
one opened since training: a fairness finding, not drift, so it asks for a look, not
for retraining (docs/fairness.md).

When inputs moved *and* quality decayed, the decision is ``data_drift``: a quality drop
under changed inputs cannot be told apart from the model meeting inputs it never saw, so
calling it a change of concept would claim more than the data shows. The concept signals
are kept in the reasons. Both signals lead to the same remedy, retraining on recent data.
See docs/monitoring.md for how the thresholds were set.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import polars as pl

from fraudops.config import MonitorParams, Params
from fraudops.data.schema import CUSTOMER_ID, TX_DATETIME, TX_FRAUD
from fraudops.health.findings import (
    DataDrift,
    DriftDecision,
    EstimateCheck,
    PerformanceEstimate,
    Quality,
    SegmentGap,
    SegmentGaps,
    Signal,
    TargetDrift,
    WindowCounts,
)
from fraudops.logs.tables import labels, predictions
from fraudops.modeling.evaluation import evaluate
from fraudops.modeling.steps import PERIOD, SCORE
from fraudops.timestamps import naive_utc_now

#: The fraud label in monitoring frames: the prediction log's name for it.
LABEL = labels.c.label.name
#: The card a row belongs to (customer id in the reference, its pseudonym in the log).
CARD = "card"
_LOG_CARD = predictions.c.customer_hash.name
#: Reference rows whose scores are out-of-sample (see ``fraudops.modeling.steps.reference_sample``).
TEST_PERIOD = "test"


class WindowError(ValueError):
    """A window cannot be analysed as it is: columns are missing."""


# --- frames -----------------------------------------------------------------------------


def reference_frame(sample: pd.DataFrame) -> pd.DataFrame:
    """The training reference sample with monitoring names: ``label`` and ``card``."""
    return sample.rename(columns={TX_FRAUD: LABEL, CUSTOMER_ID: CARD})


def window_frame(logged: pd.DataFrame) -> pd.DataFrame:
    """A window read with ``read_predictions`` with monitoring names (``card``)."""
    return logged.rename(columns={_LOG_CARD: CARD})


def clean(frame: pd.DataFrame, features: Sequence[str], *, need_labels: bool) -> pd.DataFrame:
    """The rows Evidently and NannyML can take: every feature and the score finite.

    Logged features that were not finite are stored as null, and a row missing one
    would fail a whole report, so such rows are left out (and counted by the caller).
    ``label`` becomes float with NaN where no label has arrived; reference rows must have
    one. A frame with rows but without a needed column raises ``WindowError``.
    """
    needed = [*features, SCORE, TX_DATETIME, CARD, *([LABEL] if need_labels else [])]
    missing = [column for column in needed if column not in frame.columns]
    if missing and len(frame):
        raise WindowError(f"missing columns: {', '.join(missing)}")
    if not len(frame):
        return pd.DataFrame(columns=[*features, SCORE, LABEL, CARD, TX_DATETIME])
    numbers = frame[[*features, SCORE]].apply(pd.to_numeric, errors="coerce").astype("float64")
    out = numbers.assign(
        **{
            LABEL: _float_labels(frame),
            CARD: frame[CARD],
            TX_DATETIME: pd.to_datetime(frame[TX_DATETIME]),
        }
    )
    if PERIOD in frame.columns:
        out[PERIOD] = frame[PERIOD].to_numpy()
    valid = np.isfinite(numbers.to_numpy()).all(axis=1)
    if need_labels:
        valid &= out[LABEL].notna().to_numpy()
    usable: pd.DataFrame = out[valid].reset_index(drop=True)
    return usable


def _float_labels(frame: pd.DataFrame) -> pd.Series:
    if LABEL not in frame.columns:
        return pd.Series(np.nan, index=frame.index)
    return pd.to_numeric(frame[LABEL], errors="coerce").astype("float64")


def count_rows(rows: int, valid: pd.DataFrame) -> WindowCounts:
    """ROWS received, of which VALID are the cleaned rows (with their labels)."""
    labelled = valid[LABEL].dropna()
    return WindowCounts(
        rows=rows,
        valid_rows=len(valid),
        labelled_rows=len(labelled),
        labelled_frauds=int((labelled == 1).sum()),
    )


def sample_rows(frame: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """At most SIZE rows, drawn with SEED and kept in time order: the cost stays bounded."""
    if len(frame) <= size:
        return frame
    return frame.sample(n=size, random_state=seed).sort_index()


def labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows whose label has arrived, label as int 0/1."""
    rows = frame[frame[LABEL].notna()]
    return rows.assign(**{LABEL: rows[LABEL].astype("int64")})


def out_of_sample(reference: pd.DataFrame) -> pd.DataFrame:
    """Reference rows scored by a model that never trained on them (the test period)."""
    if PERIOD not in reference.columns:
        return reference
    return reference[reference[PERIOD] == TEST_PERIOD]


# --- quality ------------------------------------------------------------------------------


def quality_metrics(rows: pd.DataFrame, threshold: float, params: Params) -> dict[str, float]:
    """``fraudops.modeling.evaluation.evaluate`` on labelled rows: the names the training run logs.

    Card precision@k counts per calendar day, so it needs the card and the day of each row.
    """
    frame = pl.DataFrame(
        {
            TX_FRAUD: rows[LABEL].to_numpy(dtype=np.int8),
            CUSTOMER_ID: pd.factorize(rows[CARD])[0],
            TX_DATETIME: rows[TX_DATETIME].to_numpy(),
        }
    )
    return evaluate(
        frame,
        rows[SCORE].to_numpy(dtype=np.float64),
        threshold=threshold,
        cost_missed_fraud=params.train.cost_missed_fraud,
        cost_false_alarm=params.train.cost_false_alarm,
        k=params.train.top_k,
    )


def can_assess_quality(counts: WindowCounts, params: MonitorParams) -> bool:
    """Enough labelled rows, frauds and genuine rows for the quality numbers to mean much."""
    return (
        counts.labelled_rows >= params.min_labelled_rows
        and counts.labelled_frauds >= params.min_labelled_frauds
        and counts.labelled_rows > counts.labelled_frauds
    )


def expected_average_precision(scores: np.ndarray, probabilities: np.ndarray) -> float:
    """Average precision expected when each row is a fraud with its calibrated probability.

    CBPE's idea applied to AP (NannyML has no AP estimator): rank by score, count each row
    as ``p`` expected frauds, and take AP of those expected counts, a ratio of expectations.
    """
    order = np.argsort(-scores, kind="stable")
    expected = probabilities[order]
    total = expected.sum()
    if total <= 0:
        return float("nan")
    precision_at_rank = np.cumsum(expected) / np.arange(1, len(expected) + 1)
    return float(np.sum(expected * precision_at_rank) / total)


def compare_estimate(
    estimate: PerformanceEstimate, realised: Mapping[str, float]
) -> list[EstimateCheck]:
    """Each estimated metric beside its realised value, for a window whose labels arrived."""
    return [
        EstimateCheck(
            metric=metric,
            estimated=value,
            realised=realised[metric],
            sampling_error=estimate.sampling_error.get(metric),
        )
        for metric, value in estimate.values.items()
        if metric in realised
    ]


# --- the decision ---------------------------------------------------------------------------


def data_drift_reasons(drift: DataDrift, params: MonitorParams) -> list[str]:
    """Why the inputs count as drifted; empty when they do not."""
    reasons = []
    drifted = drift.drifted_features
    if drift.drifted_share >= params.drifted_share:
        reasons.append(
            f"{len(drifted)} of {len(drift.features)} features drifted "
            f"({drift.drifted_share:.0%} >= {params.drifted_share:.0%}): {', '.join(drifted)}"
        )
    if drift.score.drifted:
        reasons.append(
            f"the model score drifted: {drift.score.method} {drift.score.score:.3f} "
            f">= {drift.score.threshold:.3f}"
        )
    return reasons


def concept_drift_reasons(
    target: TargetDrift | None, quality: Quality | None, params: MonitorParams
) -> list[str]:
    """Why the labelled rows show a changed concept; empty when they do not.

    The fraud rate counts when its z-test is significant *and* it moved by the set factor:
    with tens of thousands of rows a z-test alone flags week-to-week noise.
    """
    reasons = []
    if target is not None:
        ratio = target.rate_ratio
        moved = ratio >= params.target_rate_ratio or ratio <= 1 / params.target_rate_ratio
        if target.p_value < params.target_p_value and moved:
            reasons.append(
                f"the fraud rate moved: {target.current_rate:.3%} against "
                f"{target.reference_rate:.3%} in the reference (x{ratio:.2f}, "
                f"z-test p={target.p_value:.1e})"
            )
    if quality is not None:
        for metric, allowed in params.max_relative_drop.items():
            kept = quality.ratio(metric)
            if kept is not None and kept < 1 - allowed:
                reasons.append(
                    f"{metric} decayed: {quality.realised[metric]:.3f} is {kept:.0%} of "
                    f"{quality.training[metric]:.3f} at training time (floor {1 - allowed:.0%})"
                )
    return reasons


def decide(
    *,
    window_id: str,
    timestamp: dt.datetime,
    counts: WindowCounts,
    params: MonitorParams,
    data_drift: DataDrift,
    target_drift: TargetDrift | None = None,
    quality: Quality | None = None,
    estimate: PerformanceEstimate | None = None,
    segment_gaps: SegmentGaps | None = None,
    notes: Sequence[str] = (),
) -> DriftDecision:
    """One decision from the numbers of a window; input drift wins over concept drift."""
    if quality is not None and (unknown := set(params.max_relative_drop) - set(quality.realised)):
        raise ValueError(f"monitor.max_relative_drop names unknown metrics: {sorted(unknown)}")
    data_reasons = data_drift_reasons(data_drift, params)
    concept_reasons = concept_drift_reasons(target_drift, quality, params)
    signal: Signal = "none"
    reasons = concept_reasons
    if data_reasons:
        signal = "data_drift"
        reasons = data_reasons + [
            f"also (inputs moved, so not called concept drift): {reason}"
            for reason in concept_reasons
        ]
    elif concept_reasons:
        signal = "concept_drift"
    return DriftDecision(
        window_id=window_id,
        timestamp=timestamp,
        signal=signal,
        reasons=tuple(reasons),
        counts=counts,
        data_drift=data_drift,
        target_drift=target_drift,
        quality=quality,
        estimate=estimate,
        segment_gaps=segment_gaps,
        notes=tuple(notes),
    )


def segment_gaps(window: pl.DataFrame, training: pl.DataFrame | None) -> SegmentGaps:
    """The window's gap rows (`SegmentReport.gaps`) beside training's, and the gap alarm.

    A gap raises the alarm when it is flagged in the window (its whole interval beyond
    the tolerance) and clearly wider than at training: the two intervals do not overlap,
    the window's lies wholly above the training run's. Natural data already has gaps
    beyond tolerance (the spend tiers' false-positive ratio), and both reports are noisy
    (a week of traffic against a week of test period; a max-minus-min over four regions
    moves by 0.3 on noise alone at 3,000 customers), so "flagged now, not then" or "above
    the training value" fire on noise (measured in docs/fairness.md). The gate's rule
    (`fairness_check`: flagged and wider at all) suits two models on one holdout, not one
    model over two periods. Infinite ratios (a group without a false alarm) are not
    compared, as in the gate. A gap training did not measure (or a model trained without
    a fairness report, TRAINING None) fires once flagged.
    """
    before = {
        (row["segment"], row["gap"]): row
        for row in (training.iter_rows(named=True) if training is not None else ())
    }
    gaps, alarms = [], []
    for row in window.iter_rows(named=True):
        old = before.get((row["segment"], row["gap"]), {})
        gap = SegmentGap(
            segment=row["segment"],
            gap=row["gap"],
            value=_finite_or_none(row["value"]),
            low=_finite_or_none(row["low"]),
            high=_finite_or_none(row["high"]),
            tolerance=row["tolerance"],
            flagged=row["flagged"],
            training_value=_finite_or_none(old.get("value")),
            training_high=_finite_or_none(old.get("high")),
            training_flagged=old.get("flagged"),
        )
        gaps.append(gap)
        if _opened(gap):
            alarms.append(
                f"{gap.segment} {gap.gap} {gap.value:.3g} [{gap.low:.3g}, {gap.high:.3g}] "
                f"beyond {gap.tolerance:g}, against {_shown(gap.training_value)} at training"
            )
    return SegmentGaps(gaps=tuple(gaps), alarms=tuple(alarms))


def _opened(gap: SegmentGap) -> bool:
    """Flagged now, finite, and its whole interval above the training run's."""
    if not gap.flagged or gap.value is None or gap.low is None or np.isinf(gap.value):
        return False
    return gap.training_high is None or gap.low > gap.training_high


def _finite_or_none(value: object) -> float | None:
    """A gap table's number, None where not measured; infinities stay (a ratio can be)."""
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if np.isnan(number) else number


def _shown(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.3g}"


def insufficient(
    *, window_id: str, timestamp: dt.datetime, counts: WindowCounts, params: MonitorParams
) -> DriftDecision:
    """The decision for a window too small to test: it names the count and the floor."""
    reason = f"{counts.valid_rows} valid rows, fewer than monitor.min_rows = {params.min_rows}"
    if counts.invalid_rows:
        reason += f" ({counts.invalid_rows} of {counts.rows} rows had missing values)"
    return DriftDecision(
        window_id=window_id,
        timestamp=timestamp,
        signal="insufficient_data",
        reasons=(reason,),
        counts=counts,
    )


def window_time(frame: pd.DataFrame) -> dt.datetime:
    """When a window ends: its newest transaction, or now for an empty window."""
    if len(frame) and TX_DATETIME in frame.columns:
        newest = pd.to_datetime(frame[TX_DATETIME]).max()
        if pd.notna(newest):
            return newest.to_pydatetime()
    return naive_utc_now()
