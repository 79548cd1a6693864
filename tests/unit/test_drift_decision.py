"""The decision rule, window cleaning and estimate arithmetic, on hand-made numbers."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.metrics import average_precision_score

from fraudops.config import MonitorParams, Params
from fraudops.data.schema import CUSTOMER_ID, TX_DATETIME, TX_FRAUD
from fraudops.features.definitions import feature_columns
from fraudops.health.decision import (
    CARD,
    LABEL,
    WindowError,
    clean,
    compare_estimate,
    count_rows,
    decide,
    expected_average_precision,
    insufficient,
    quality_metrics,
    reference_frame,
    sample_rows,
    window_frame,
)
from fraudops.health.findings import (
    ColumnDrift,
    DataDrift,
    DriftDecision,
    PerformanceEstimate,
    Quality,
    TargetDrift,
)
from fraudops.modeling.evaluation import evaluate
from fraudops.modeling.steps import PERIOD, SCORE

FEATURES = feature_columns(Params().features)
MONITOR = MonitorParams()
WHEN = dt.datetime(2018, 6, 1)
TRAINING = {"average_precision": 0.6, "recall": 0.7, "roc_auc": 0.85, "precision": 0.5}


def _column(name: str, score: float, threshold: float = 0.1) -> ColumnDrift:
    return ColumnDrift(
        column=name,
        method="wasserstein",
        score=score,
        threshold=threshold,
        drifted=score >= threshold,
    )


def _data_drift(drifted: int = 0, score: float = 0.01) -> DataDrift:
    features = tuple(_column(name, 0.5 if i < drifted else 0.02) for i, name in enumerate(FEATURES))
    return DataDrift(
        features=features, drifted_share=drifted / len(FEATURES), score=_column(SCORE, score)
    )


def _decide(**numbers) -> DriftDecision:
    counts = count_rows(10_000, pd.DataFrame({LABEL: [0.0] * 9_900 + [1.0] * 100}))
    return decide(window_id="w1", timestamp=WHEN, counts=counts, params=MONITOR, **numbers)


def test_stable_inputs_and_quality_decide_none():
    decision = _decide(
        data_drift=_data_drift(),
        target_drift=TargetDrift(p_value=0.4, reference_rate=0.008, current_rate=0.0085),
        quality=Quality(realised=dict(TRAINING), training=TRAINING),
    )
    assert decision.signal == "none"
    assert decision.reasons == ()
    assert not decision.is_drift


def test_enough_drifted_features_is_data_drift_and_names_them():
    decision = _decide(data_drift=_data_drift(drifted=3))  # 3 of 15 = 20 %
    assert decision.signal == "data_drift"
    assert FEATURES[0] in decision.reasons[0] and "3 of 15" in decision.reasons[0]


def test_fewer_drifted_features_than_the_share_is_not_drift():
    assert _decide(data_drift=_data_drift(drifted=2)).signal == "none"


def test_score_drift_alone_is_data_drift():
    decision = _decide(data_drift=_data_drift(score=0.3))
    assert decision.signal == "data_drift"
    assert "score drifted" in decision.reasons[0]


def test_quality_decay_with_stable_inputs_is_concept_drift():
    realised = dict(TRAINING, recall=0.5)  # 71 % of 0.7, under the 80 % floor
    decision = _decide(
        data_drift=_data_drift(), quality=Quality(realised=realised, training=TRAINING)
    )
    assert decision.signal == "concept_drift"
    assert decision.reasons == (
        "recall decayed: 0.500 is 71% of 0.700 at training time (floor 80%)",
    )


def test_a_small_drop_within_the_allowance_is_not_drift():
    realised = dict(TRAINING, recall=0.6, roc_auc=0.8)  # 86 % and 94 %
    decision = _decide(
        data_drift=_data_drift(), quality=Quality(realised=realised, training=TRAINING)
    )
    assert decision.signal == "none"


def test_fraud_rate_needs_significance_and_size_to_count():
    significant_but_small = TargetDrift(p_value=1e-4, reference_rate=0.008, current_rate=0.010)
    large_but_noise = TargetDrift(p_value=0.2, reference_rate=0.008, current_rate=0.016)
    both = TargetDrift(p_value=1e-9, reference_rate=0.008, current_rate=0.016)
    falling = TargetDrift(p_value=1e-9, reference_rate=0.008, current_rate=0.004)
    assert _decide(data_drift=_data_drift(), target_drift=significant_but_small).signal == "none"
    assert _decide(data_drift=_data_drift(), target_drift=large_but_noise).signal == "none"
    assert _decide(data_drift=_data_drift(), target_drift=both).signal == "concept_drift"
    assert _decide(data_drift=_data_drift(), target_drift=falling).signal == "concept_drift"


def test_input_drift_wins_over_decay_and_keeps_it_as_a_reason():
    realised = dict(TRAINING, average_precision=0.3)
    decision = _decide(
        data_drift=_data_drift(score=0.5), quality=Quality(realised=realised, training=TRAINING)
    )
    assert decision.signal == "data_drift"
    assert any(
        reason.startswith("also") and "average_precision" in reason for reason in decision.reasons
    )


def test_a_tolerance_for_an_unknown_metric_is_an_error():
    params = MonitorParams(max_relative_drop={"auc_roc": 0.1})
    with pytest.raises(ValueError, match="auc_roc"):
        decide(
            window_id="w",
            timestamp=WHEN,
            counts=count_rows(1, pd.DataFrame({LABEL: [0.0]})),
            params=params,
            data_drift=_data_drift(),
            quality=Quality(realised=TRAINING, training=TRAINING),
        )


def test_insufficient_names_the_count_and_the_floor():
    counts = count_rows(12, pd.DataFrame({LABEL: [np.nan] * 10}))
    decision = insufficient(window_id="w", timestamp=WHEN, counts=counts, params=MONITOR)
    assert decision.signal == "insufficient_data"
    assert decision.reasons == (
        "10 valid rows, fewer than monitor.min_rows = 1000 (2 of 12 rows had missing values)",
    )


def test_decision_round_trips_through_json_and_flattens_to_floats():
    decision = _decide(
        data_drift=_data_drift(drifted=4),
        target_drift=TargetDrift(p_value=0.0, reference_rate=0.008, current_rate=0.02),
        quality=Quality(realised=TRAINING, training=TRAINING),
        estimate=PerformanceEstimate(
            values={"recall": 0.7},
            sampling_error={"recall": 0.02},
            expected_frauds=80.0,
            rows=10_000,
            calibrated=True,
        ),
        notes=["a note"],
    )
    assert DriftDecision.model_validate_json(decision.model_dump_json()) == decision
    metrics = decision.metrics()
    assert metrics["signal.data_drift"] == 1.0 and metrics["signal.concept_drift"] == 0.0
    assert metrics[f"drift.feature.{FEATURES[0]}"] == 0.5
    assert metrics["estimated.recall"] == 0.7 and metrics["window.labelled_frauds"] == 100
    assert all(isinstance(value, float) and math.isfinite(value) for value in metrics.values())


# --- frames -------------------------------------------------------------------------------


def _window(rows: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((rows, len(FEATURES))), columns=FEATURES)
    return frame.assign(
        **{
            SCORE: rng.random(rows),
            LABEL: pd.array([0, 1] + [pd.NA] * (rows - 2), dtype="Int8"),
            "customer_hash": [f"c{i % 3}" for i in range(rows)],
            TX_DATETIME: pd.date_range("2018-06-01", periods=rows, freq="h"),
        }
    )


def test_clean_drops_rows_with_a_missing_value_and_keeps_unlabelled_rows():
    window = _window()
    window.loc[2, FEATURES[3]] = None
    window.loc[3, SCORE] = np.inf
    cleaned = clean(window_frame(window), FEATURES, need_labels=False)
    assert len(cleaned) == 4
    assert cleaned[LABEL].isna().sum() == 2 and cleaned[CARD].tolist() == ["c0", "c1", "c1", "c2"]
    counts = count_rows(len(window), cleaned)
    assert (counts.invalid_rows, counts.labelled_rows, counts.labelled_frauds) == (2, 2, 1)


def test_clean_refuses_a_window_missing_a_feature_but_not_an_empty_one():
    with pytest.raises(WindowError, match=FEATURES[-1]):
        clean(_window().drop(columns=FEATURES[-1]), FEATURES, need_labels=False)
    assert clean(pd.DataFrame(), FEATURES, need_labels=False).empty


def test_reference_rows_need_a_label():
    reference = _window().rename(columns={LABEL: TX_FRAUD, "customer_hash": CUSTOMER_ID})
    cleaned = clean(
        reference_frame(reference.assign(**{PERIOD: "test"})), FEATURES, need_labels=True
    )
    assert cleaned[LABEL].tolist() == [0.0, 1.0]
    assert cleaned[PERIOD].tolist() == ["test", "test"]


def test_sampling_is_seeded_bounded_and_keeps_time_order():
    frame = pd.DataFrame({"x": range(1000)})
    first, again = sample_rows(frame, 100, seed=3), sample_rows(frame, 100, seed=3)
    assert len(first) == 100 and first.equals(again)
    assert first["x"].is_monotonic_increasing
    assert not first.equals(sample_rows(frame, 100, seed=4))
    assert sample_rows(frame, 5000, seed=3) is frame


def test_quality_metrics_are_evaluates_numbers():
    rng = np.random.default_rng(1)
    n = 500
    rows = pd.DataFrame(
        {
            LABEL: (rng.random(n) < 0.1).astype(int),
            SCORE: rng.random(n),
            CARD: rng.integers(0, 50, n),
            TX_DATETIME: pd.Timestamp("2018-06-01")
            + pd.to_timedelta(rng.integers(0, 3 * 86400, n), "s"),
        }
    )
    params = Params()
    frame = pl.DataFrame(
        {
            TX_FRAUD: rows[LABEL].to_numpy(),
            CUSTOMER_ID: rows[CARD].to_numpy(),
            TX_DATETIME: rows[TX_DATETIME],
        }
    )
    expected = evaluate(
        frame,
        rows[SCORE].to_numpy(),
        threshold=0.8,
        cost_missed_fraud=params.train.cost_missed_fraud,
        cost_false_alarm=params.train.cost_false_alarm,
        k=params.train.top_k,
    )
    assert quality_metrics(rows, 0.8, params) == pytest.approx(expected)


# --- estimates ------------------------------------------------------------------------------


def test_expected_average_precision_of_certain_probabilities_is_the_realised_one():
    rng = np.random.default_rng(2)
    labels = (rng.random(300) < 0.2).astype(float)
    scores = rng.random(300)
    assert expected_average_precision(scores, labels) == pytest.approx(
        average_precision_score(labels, scores)
    )
    assert math.isnan(expected_average_precision(scores, np.zeros(300)))


def test_an_estimate_is_checked_against_its_band():
    estimate = PerformanceEstimate(
        values={"recall": 0.75, "precision": 0.6, "average_precision": 0.7},
        sampling_error={"recall": 0.02, "precision": 0.03},
        expected_frauds=300.0,
        rows=40_000,
        calibrated=True,
    )
    checks = {
        check.metric: check
        for check in compare_estimate(estimate, {"recall": 0.45, "precision": 0.62})
    }
    assert set(checks) == {"recall", "precision"}  # no realised AP: nothing to compare
    assert checks["recall"].error == pytest.approx(-0.30) and checks["recall"].within_band is False
    assert checks["precision"].within_band is True
    assert estimate.expected_fraud_rate == pytest.approx(0.0075)
