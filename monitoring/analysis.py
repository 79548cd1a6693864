"""One monitoring run over one window: clean, sample, test, estimate, decide.

``analyse_window`` takes the two frames a monitoring flow has at hand — the reference
sample logged with the champion's training run and a window read with
``fraudops.logs.readers.read_predictions`` — so it runs the same in a test without
MLflow or a database. It never raises for a window that is merely empty or small (that is
``insufficient_data``); a window it cannot analyse, or an Evidently failure, raises
``MonitoringError`` naming the window, so a scheduled flow can record it and go on next
time. A NannyML failure only loses the estimate: the decision does not depend on it, so
it is kept, with the error in its notes.

Given `SegmentInputs` (the customers' raw history and the training run's fairness
report), the labelled rows are also reported per customer segment and the decision gets
the gaps and the gap alarm. Segments that cannot be reported (no history, too few labels,
transactions the history lacks) only cost the segment report, with the reason in the notes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
import polars as pl
from evidently.core.report import Snapshot

from fraudops.config import Params
from fraudops.fairness.segment_report import GROUP, SEGMENT, SegmentReport
from fraudops.fairness.window_segments import RawHistory, SegmentsUnavailable
from fraudops.features.definitions import feature_columns
from fraudops.health.decision import (
    LABEL,
    WindowError,
    can_assess_quality,
    clean,
    compare_estimate,
    count_rows,
    decide,
    insufficient,
    labelled,
    out_of_sample,
    quality_metrics,
    reference_frame,
    sample_rows,
    segment_gaps,
    window_frame,
    window_time,
)
from fraudops.health.findings import (
    DriftDecision,
    EstimateCheck,
    PerformanceEstimate,
    Quality,
    SegmentGaps,
)
from monitoring.drift import constant_features, run_drift, run_quality
from monitoring.performance import EstimationError, estimate_performance

logger = logging.getLogger(__name__)


class MonitoringError(RuntimeError):
    """A window could not be analysed; names the window and the step that failed."""

    def __init__(self, window_id: str, step: str, cause: str) -> None:
        super().__init__(f"window {window_id}: {step} failed: {cause}")
        self.window_id = window_id
        self.step = step


@dataclass(frozen=True)
class SegmentInputs:
    """What a window's segment report needs beside the window: the customers' raw
    history, and the training run's report (None for a model trained without one)."""

    history: RawHistory
    training: SegmentReport | None


@dataclass(frozen=True)
class MonitoringResult:
    """The decision and the Evidently snapshots behind it (``drift``, and ``quality``
    when enough labels had arrived), and the window's segment report when one was made
    (its table with the training run's alert rate per segment value beside the window's)."""

    decision: DriftDecision
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    segments: SegmentReport | None = None

    @property
    def metrics(self) -> dict[str, float]:
        return self.decision.metrics()


def analyse_window(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    threshold: float,
    params: Params,
    window_id: str,
    training_metrics: Mapping[str, float] | None = None,
    timestamp: dt.datetime | None = None,
    segments: SegmentInputs | None = None,
) -> MonitoringResult:
    """Test CURRENT (a prediction-log window) against REFERENCE (the training sample).

    THRESHOLD is the served model's alert threshold (its card's). TRAINING_METRICS are the
    training run's test metrics; without them they are computed on the reference's test
    period, a sample of it and so a noisier baseline. TIMESTAMP places the run on the
    dashboards' time axis; it defaults to the window's newest transaction. SEGMENTS, when
    given, adds the per-segment report and the gap alarm.
    """
    features = feature_columns(params.features)
    monitor = params.monitor
    when = timestamp or window_time(current)
    ref = _cleaned(reference_frame(reference), features, window_id, "reference", labels=True)
    window = _cleaned(window_frame(current), features, window_id, "window", labels=False)
    counts = count_rows(len(current), window)
    if counts.valid_rows < monitor.min_rows:
        return MonitoringResult(
            insufficient(window_id=window_id, timestamp=when, counts=counts, params=monitor)
        )
    if not len(ref):
        raise MonitoringError(window_id, "checking the reference", "no row has every column")
    sample = sample_rows(window, monitor.sample_size, monitor.seed)
    ref_sample = sample_rows(ref, monitor.sample_size, monitor.seed)
    counts = counts.model_copy(update={"sampled_rows": len(sample)})
    assessed = can_assess_quality(counts, monitor)
    metadata = {"window_id": window_id}
    with _reported(window_id, "Evidently drift report"):
        drift_snapshot, data_drift, target_drift = run_drift(
            ref_sample,
            sample,
            features,
            monitor,
            target=assessed,
            timestamp=when,
            metadata=metadata,
        )
    snapshots, quality = {"drift": drift_snapshot}, None
    notes = _constant_notes(ref_sample, sample, features)
    if assessed:
        quality = Quality(
            realised=quality_metrics(labelled(window), threshold, params),
            training=dict(
                training_metrics or quality_metrics(out_of_sample(ref), threshold, params)
            ),
        )
        with _reported(window_id, "Evidently quality report"):
            snapshots["quality"] = run_quality(
                labelled(out_of_sample(ref_sample)),
                labelled(sample),
                threshold=threshold,
                timestamp=when,
                metadata=metadata,
            )
    else:
        notes.append(
            f"concept drift not assessed: {counts.labelled_rows} labelled rows with "
            f"{counts.labelled_frauds} frauds (needs {monitor.min_labelled_rows} rows and "
            f"{monitor.min_labelled_frauds} frauds)"
        )
    estimate, note = _estimate(out_of_sample(ref), window, threshold, params, window_id)
    report, gaps = None, None
    if segments is not None:
        report, gaps, segment_notes = analyse_segments(current, segments, params, assessed=assessed)
        notes += segment_notes
    decision = decide(
        window_id=window_id,
        timestamp=when,
        counts=counts,
        params=monitor,
        data_drift=data_drift,
        target_drift=target_drift,
        quality=quality,
        estimate=estimate,
        segment_gaps=gaps,
        notes=[*notes, *([note] if note else [])],
    )
    return MonitoringResult(decision, snapshots, report)


def analyse_segments(
    current: pd.DataFrame, inputs: SegmentInputs, params: Params, *, assessed: bool = True
) -> tuple[SegmentReport | None, SegmentGaps | None, list[str]]:
    """CURRENT's segment report and gaps, or a note on why there are none.

    Needs the labels that concept drift needs (ASSESSED, `can_assess_quality`): with
    fewer, every interval is too wide to flag anything, and a quiet alarm would read as
    a clean bill.
    """
    if not assessed:
        return None, None, ["segments not reported: too few labels (as for concept drift)"]
    try:
        found = inputs.history.report(current, params)
    except SegmentsUnavailable as error:
        return None, None, [f"segments not reported: {error}"]
    notes = []
    if found.not_in_history:
        notes.append(
            f"segments: {found.not_in_history} of {found.labelled} labelled rows are not "
            "in the customer history and were left out"
        )
    training = inputs.training
    gaps = segment_gaps(found.report.gaps, None if training is None else training.gaps)
    table = _with_training_alert_rate(found.report.table, training)
    return SegmentReport(table, found.report.gaps), gaps, notes


def _with_training_alert_rate(table: pl.DataFrame, training: SegmentReport | None) -> pl.DataFrame:
    """TABLE with ``training_alert_rate`` per segment value: the per-segment drift of the
    decisions (null for a value training did not see)."""
    rates = (
        training.table.select(SEGMENT, GROUP, pl.col("alert_rate").alias("training_alert_rate"))
        if training is not None
        else pl.DataFrame(
            schema={SEGMENT: pl.String, GROUP: pl.String, "training_alert_rate": pl.Float64}
        )
    )
    return table.join(rates, on=[SEGMENT, GROUP], how="left", maintain_order="left")


def check_estimate(
    decision: DriftDecision,
    current: pd.DataFrame,
    *,
    threshold: float,
    params: Params,
) -> list[EstimateCheck]:
    """Compare a past window's estimate with its realised quality, once labels landed.

    CURRENT is the same window read again with the labels received since. Empty when the
    past run had no estimate or the window still lacks the labels to judge.
    """
    if decision.estimate is None:
        return []
    features = feature_columns(params.features)
    window = _cleaned(window_frame(current), features, decision.window_id, "window", labels=False)
    if not can_assess_quality(count_rows(len(current), window), params.monitor):
        return []
    realised = quality_metrics(labelled(window), threshold, params)
    return compare_estimate(decision.estimate, realised)


def _estimate(
    reference: pd.DataFrame,
    window: pd.DataFrame,
    threshold: float,
    params: Params,
    window_id: str,
) -> tuple[PerformanceEstimate | None, str | None]:
    """CBPE's estimate, or why there is none: calibrating needs frauds in the reference."""
    frauds = int((reference[LABEL] == 1).sum())
    if frauds < params.monitor.min_reference_frauds:
        return None, (
            f"performance not estimated: the reference's out-of-sample rows hold {frauds} "
            f"frauds (needs {params.monitor.min_reference_frauds})"
        )
    try:
        return estimate_performance(reference, window, threshold=threshold), None
    except EstimationError as error:
        logger.warning("window %s: performance estimate failed: %s", window_id, error)
        return None, f"performance estimate failed: {error}"


def _constant_notes(
    reference: pd.DataFrame, window: pd.DataFrame, features: list[str]
) -> list[str]:
    """A note per numeric feature with one value, worth a look in itself (a feature stuck
    upstream?), saying how its drift was judged (see ``monitoring.drift``)."""
    in_window = constant_features(window, features)
    in_reference = constant_features(reference, features)
    notes = []
    for name in features:
        if name in in_reference:
            notes.append(
                f"{name} is constant in the reference ({in_reference[name]:g}): with no "
                "spread to scale by, any change counts as drift"
            )
        elif name in in_window:
            notes.append(
                f"{name} is constant in the window ({in_window[name]:g}): its drift is "
                "its distance from the reference's spread, as usual"
            )
    return notes


def _cleaned(
    frame: pd.DataFrame, features: list[str], window_id: str, what: str, *, labels: bool
) -> pd.DataFrame:
    try:
        return clean(frame, features, need_labels=labels)
    except WindowError as error:
        raise MonitoringError(window_id, f"checking the {what}", str(error)) from error


@contextmanager
def _reported(window_id: str, step: str) -> Iterator[None]:
    """Any failure inside becomes a ``MonitoringError`` naming the window and the step."""
    try:
        yield
    except Exception as error:
        raise MonitoringError(window_id, step, repr(error)) from error
