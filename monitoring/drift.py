"""Evidently reports of a window: input, score and target drift, and classification quality.

Two reports per window, because they compare with different references:

* ``drift`` — every sampled row of the window against the whole reference sample: one
  test per feature and the share of drifted features (the metrics of ``DataDriftPreset``),
  the model score, and the fraud rate of the labelled rows. The whole sample (training
  and test periods) is the population the model was fitted and checked on; the test
  period alone has known-compromised cards removed (the handbook protocol), so its score
  distribution and fraud rate sit below live traffic's even when nothing drifts.
* ``quality`` — the labelled rows against the reference's test period, whose scores are
  out-of-sample: Evidently's classification metrics, the reference column showing the
  model at training time.

Methods are fixed rather than left to Evidently's choice by sample size, so a verdict
always means "distance at or above the threshold": normed Wasserstein distance for
numeric columns, Jensen-Shannon distance for the binary calendar flags, and a z-test
p-value for the fraud rate (the default test misses a rate moving from 1 % to 2 %).

A numeric feature with one value (``constant_features``: a feature stuck upstream, or one
that cannot vary yet in a short window) keeps the usual test. The normed distance is the
Wasserstein distance over the reference's standard deviation, so it is defined for a
constant window; for a constant reference Evidently divides by 0.001 instead, so any
change at all counts as drift and the number's size means nothing more. What has no value
is the column's correlation with the others, which ``DriftedColumnsCount`` computes for
its HTML table (``np.corrcoef``, 0 / 0): numpy warns, and nothing here reads it, so that
warning is silenced around the report, and only when such a column exists.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from evidently import BinaryClassification, DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import DriftedColumnsCount, MeanValue, QuantileValue, ValueDrift
from evidently.presets import ClassificationQuality

from fraudops.config import MonitorParams
from fraudops.features.definitions import TX_DURING_NIGHT, TX_DURING_WEEKEND
from fraudops.health.decision import LABEL
from fraudops.health.findings import ColumnDrift, DataDrift, TargetDrift
from fraudops.modeling.steps import SCORE

#: Features with two values: a distribution distance over categories suits them.
BINARY_FEATURES = (TX_DURING_WEEKEND, TX_DURING_NIGHT)
NUMERIC_METHOD = "wasserstein"
BINARY_METHOD = "jensenshannon"
TARGET_METHOD = "z"
#: Quantiles of the score each drift report records (for the score-distribution panel).
SCORE_QUANTILES = (0.5, 0.9, 0.99)

_METRIC = "evidently:metric_v2:"
_FAILED = "FAIL"


def _definition(features: Sequence[str], *, target: bool) -> DataDefinition:
    binary = [name for name in features if name in BINARY_FEATURES]
    numeric = [name for name in features if name not in BINARY_FEATURES]
    return DataDefinition(
        numerical_columns=[*numeric, SCORE],
        categorical_columns=[*binary, *([LABEL] if target else [])],
    )


def drift_report(features: Sequence[str], params: MonitorParams, *, target: bool) -> Report:
    """Per-feature drift and its share, score drift and quantiles, and (when labels
    arrived) target drift.

    These are the metrics ``DataDriftPreset`` generates, without the preset's summary
    table: rendering it recomputes every column's drift twice, a third of the report's cost.
    """
    metrics: list[Any] = [
        DriftedColumnsCount(
            columns=list(features),
            num_method=NUMERIC_METHOD,
            cat_method=BINARY_METHOD,
            threshold=params.column_drift_threshold,
            drift_share=params.drifted_share,
        ),
        *(
            ValueDrift(
                column=name,
                method=BINARY_METHOD if name in BINARY_FEATURES else NUMERIC_METHOD,
                threshold=params.column_drift_threshold,
            )
            for name in features
        ),
        ValueDrift(column=SCORE, method=NUMERIC_METHOD, threshold=params.score_drift_threshold),
        MeanValue(column=SCORE),
        *(QuantileValue(column=SCORE, quantile=quantile) for quantile in SCORE_QUANTILES),
    ]
    if target:
        metrics.append(
            ValueDrift(column=LABEL, method=TARGET_METHOD, threshold=params.target_p_value)
        )
    return Report(metrics, include_tests=True)


def run_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[str],
    params: MonitorParams,
    *,
    target: bool,
    timestamp: dt.datetime,
    metadata: dict[str, str],
) -> tuple[Snapshot, DataDrift, TargetDrift | None]:
    """Run the drift report; TARGET: also test the fraud rate of the labelled rows."""
    columns = [*features, SCORE, *([LABEL] if target else [])]
    definition = _definition(features, target=target)
    undefined_correlations = (
        np.errstate(invalid="ignore")  # see the module's docstring
        if constant_features(reference, features) or constant_features(current, features)
        else contextlib.nullcontext()
    )
    with undefined_correlations:
        snapshot = drift_report(features, params, target=target).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
            timestamp=timestamp,
            metadata=metadata,
            tags=["drift"],
        )
    result = snapshot.dict()
    drifts = {drift.column: drift for drift in column_drifts(result)}
    data = DataDrift(
        features=tuple(drifts[name] for name in features),
        drifted_share=drifted_share(result),
        score=drifts[SCORE],
    )
    target_drift = None
    if target:
        target_drift = TargetDrift(
            p_value=drifts[LABEL].score,
            reference_rate=float(reference[LABEL].mean()),
            current_rate=float(current[LABEL].mean()),
        )
    return snapshot, data, target_drift


def constant_features(frame: pd.DataFrame, features: Sequence[str]) -> dict[str, float]:
    """The numeric features of FRAME with a single value, and that value.

    The binary flags are left out: one value of two is an ordinary day (a weekday window
    has no weekend), and the Jensen-Shannon distance they are tested with needs no spread.
    """
    numeric = [name for name in features if name not in BINARY_FEATURES]
    if frame.empty or not numeric:
        return {}
    values = frame[numeric]
    lowest, highest = values.min(), values.max()
    return {name: float(lowest[name]) for name in numeric if lowest[name] == highest[name]}


def column_drifts(result: dict[str, Any]) -> list[ColumnDrift]:
    """Each ``ValueDrift`` of a snapshot's ``dict()``, its verdict read from its test."""
    failed = {
        test["metric_config"]["metric_id"]
        for test in result["tests"]
        if test.get("metric_config") and test["status"] == _FAILED
    }
    return [
        ColumnDrift(
            column=metric["config"]["column"],
            method=metric["config"]["method"],
            score=float(metric["value"]),
            threshold=float(metric["config"]["threshold"]),
            drifted=metric["id"] in failed,
        )
        for metric in result["metrics"]
        if metric["config"]["type"] == f"{_METRIC}ValueDrift"
    ]


def drifted_share(result: dict[str, Any]) -> float:
    """The share of drifted features that ``DriftedColumnsCount`` counted."""
    for metric in result["metrics"]:
        if metric["config"]["type"] == f"{_METRIC}DriftedColumnsCount":
            return float(metric["value"]["share"])
    raise ValueError("the snapshot has no DriftedColumnsCount metric")


def run_quality(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    threshold: float,
    timestamp: dt.datetime,
    metadata: dict[str, str],
) -> Snapshot:
    """Evidently's classification metrics of labelled rows, alerts at the model's threshold.

    ``ClassificationQuality`` rather than ``ClassificationPreset``, which fails on a window
    without fraud; ``probas_threshold`` because Evidently would otherwise cut at 0.5.
    """
    definition = DataDefinition(
        numerical_columns=[SCORE],
        categorical_columns=[LABEL],
        classification=[BinaryClassification(target=LABEL, prediction_probas=SCORE)],
    )
    columns = [SCORE, LABEL]
    return Report([ClassificationQuality(probas_threshold=threshold)], include_tests=True).run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
        timestamp=timestamp,
        metadata=metadata,
        tags=["quality"],
    )
