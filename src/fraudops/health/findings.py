"""What a monitoring window found: the typed record of its numbers and its signal.

Apart from ``decision``, which computes them, because the reports, the dashboards, the
Evidently and NannyML glue and the flows read these records without needing any of the
computation.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

Signal = Literal["none", "data_drift", "concept_drift", "insufficient_data"]
#: Signals that call for action (retraining).
DRIFT_SIGNALS: tuple[Signal, ...] = ("data_drift", "concept_drift")

#: Half-width, in sampling errors, of the band an estimate is expected to fall in.
ESTIMATE_BAND_SIGMAS = 3.0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WindowCounts(_Frozen):
    """How many rows the window had and how many of them each step used."""

    rows: int
    valid_rows: int
    sampled_rows: int = 0
    labelled_rows: int = 0
    labelled_frauds: int = 0

    @property
    def invalid_rows(self) -> int:
        return self.rows - self.valid_rows


class ColumnDrift(_Frozen):
    """One column's drift test: its method, score, threshold and verdict (from Evidently)."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


class DataDrift(_Frozen):
    """Drift of the model inputs, one test per feature, and of the model score."""

    features: tuple[ColumnDrift, ...]
    drifted_share: float
    score: ColumnDrift

    @property
    def drifted_features(self) -> list[str]:
        return [column.column for column in self.features if column.drifted]


class TargetDrift(_Frozen):
    """The fraud rate of the labelled rows against the reference's, with a z-test p-value."""

    p_value: float
    reference_rate: float
    current_rate: float

    @property
    def rate_ratio(self) -> float:
        return self.current_rate / self.reference_rate if self.reference_rate else float("inf")


class Quality(_Frozen):
    """Metrics of the labelled rows of the window and of the model at training time."""

    realised: dict[str, float]
    training: dict[str, float]

    def ratio(self, metric: str) -> float | None:
        """Realised over training-time value; None when either is missing or zero."""
        realised, training = self.realised.get(metric), self.training.get(metric)
        if realised is None or not training or not np.isfinite(training):
            return None
        return realised / training


class PerformanceEstimate(_Frozen):
    """Quality expected from the scores alone, before any label arrives (CBPE).

    ``values`` holds the estimates, ``sampling_error`` their standard errors where NannyML
    gives one; ``expected_frauds`` is the sum of the calibrated fraud probabilities.
    """

    values: dict[str, float]
    sampling_error: dict[str, float]
    expected_frauds: float
    rows: int
    calibrated: bool

    @property
    def expected_fraud_rate(self) -> float:
        return self.expected_frauds / self.rows if self.rows else float("nan")


class EstimateCheck(_Frozen):
    """An earlier estimate against the value realised once the labels arrived."""

    metric: str
    estimated: float
    realised: float
    sampling_error: float | None

    @property
    def error(self) -> float:
        return self.realised - self.estimated

    @property
    def within_band(self) -> bool | None:
        """Whether the realised value lies within the estimate's confidence band."""
        if self.sampling_error is None:
            return None
        return abs(self.error) <= ESTIMATE_BAND_SIGMAS * self.sampling_error


class SegmentGap(_Frozen):
    """One gap between the values of a customer segment column in the window.

    The numbers of `fraudops.fairness.segment_report.SegmentReport.gaps` (None where not
    measured), beside the training run's value and whether training flagged it too.
    """

    segment: str
    gap: str
    value: float | None
    low: float | None
    high: float | None
    tolerance: float
    flagged: bool
    training_value: float | None = None
    training_high: float | None = None
    training_flagged: bool | None = None


class SegmentGaps(_Frozen):
    """The window's gaps between customer segments, and the gap alarm (see docs/fairness.md).

    ``alarms`` names each gap that fires it: flagged in the window, and clearly wider
    than in the training run's report (`fraudops.health.decision.segment_gaps`).
    """

    gaps: tuple[SegmentGap, ...]
    alarms: tuple[str, ...] = ()

    @property
    def alarm(self) -> bool:
        return bool(self.alarms)


class DriftDecision(_Frozen):
    """The outcome of one monitoring run: a signal, why, and every number behind it."""

    window_id: str
    timestamp: dt.datetime
    signal: Signal
    reasons: tuple[str, ...]
    counts: WindowCounts
    data_drift: DataDrift | None = None
    target_drift: TargetDrift | None = None
    quality: Quality | None = None
    estimate: PerformanceEstimate | None = None
    segment_gaps: SegmentGaps | None = None
    notes: tuple[str, ...] = ()

    @property
    def is_drift(self) -> bool:
        return self.signal in DRIFT_SIGNALS

    @property
    def gap_alarm(self) -> bool:
        """A gap between customer segments opened: a fairness alarm, apart from drift."""
        return self.segment_gaps is not None and self.segment_gaps.alarm

    def metrics(self) -> dict[str, float]:
        """Every number as a flat ``name -> float`` map, ready to log as run metrics."""
        counts = self.counts
        numbers: dict[str, float] = {
            "window.rows": counts.rows,
            "window.valid_rows": counts.valid_rows,
            "window.sampled_rows": counts.sampled_rows,
            "window.labelled_rows": counts.labelled_rows,
            "window.labelled_frauds": counts.labelled_frauds,
            **{f"signal.{signal}": float(self.signal == signal) for signal in DRIFT_SIGNALS},
        }
        if self.data_drift:
            drift = self.data_drift
            numbers["drift.drifted_share"] = drift.drifted_share
            numbers["drift.score"] = drift.score.score
            numbers |= {f"drift.feature.{c.column}": c.score for c in drift.features}
        if self.target_drift:
            numbers["target.p_value"] = self.target_drift.p_value
            numbers["target.reference_rate"] = self.target_drift.reference_rate
            numbers["target.current_rate"] = self.target_drift.current_rate
        if self.quality:
            numbers |= {f"realised.{k}": v for k, v in self.quality.realised.items()}
            numbers |= {f"training.{k}": v for k, v in self.quality.training.items()}
        if self.estimate:
            numbers |= {f"estimated.{k}": v for k, v in self.estimate.values.items()}
            numbers["estimated.expected_frauds"] = self.estimate.expected_frauds
        if self.segment_gaps:
            numbers["fairness.gap_alarm"] = float(self.segment_gaps.alarm)
            numbers |= {
                f"fairness.{g.segment}.{g.gap}": g.value
                for g in self.segment_gaps.gaps
                if g.value is not None
            }
        return {name: float(value) for name, value in numbers.items()}
