"""Known-truth monitoring windows: a model trained on drift-free data, then each scenario.

For one seed, the simulator's scenarios share every draw up to their own change
(``amount_shift`` is ``none`` with scaled amounts, ``new_fraud_pattern`` is ``none`` plus
card testing), so "the world changes on day D" is the ``none`` history up to D followed
by the scenario's days from D, with features computed over the joined stream. A model is
trained on the history as the training flow would (one fixed XGBoost candidate instead
of the search, to stay quick), and its reference sample and test metrics are those the
training run logs. Each window is shaped like ``read_predictions`` output, with every
label present; ``without_labels`` gives the same window before its labels arrive.

Each world keeps the raw transactions behind every window and the training run's test
alerts, so a test can also ask for the per-segment reports (`ScenarioWorld.raw`,
`ScenarioWorld.training_segments`): the fairness alarm's known truth is the
``regional_fraud`` scenario, which only the callers that ask for it simulate.

Used by the drift and fairness-alarm tests and the monitoring benchmark.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from fraudops.config import Params, Scenario
from fraudops.data.schema import CUSTOMER_ID, TRANSACTION_ID, TX_DATETIME, TX_FRAUD
from fraudops.data.simulate import simulate
from fraudops.data.split import final_split
from fraudops.fairness.segment_report import SegmentReport, segment_report
from fraudops.features.definitions import build_features, feature_columns
from fraudops.health.decision import LABEL
from fraudops.logs.tables import predictions
from fraudops.modeling.candidates import Candidate, Selection, fit, fraud_scores
from fraudops.modeling.evaluation import choose_threshold
from fraudops.modeling.steps import DataSource, TrainingResult, evaluate_on_test, reference_sample

#: Days before the training window, so 30-day windows (37 with the label delay) are full.
WARM_UP_DAYS = 38
QUICK_MODEL = Candidate("xgboost", {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1})
#: The drift scenarios, simulated by default; every scenario added costs every caller.
SCENARIOS: tuple[Scenario, ...] = ("none", "amount_shift", "new_fraud_pattern")


@dataclass(frozen=True)
class ScenarioWorld:
    """A trained model's reference sample, threshold and test metrics, and one window per
    scenario starting the day after its test period."""

    reference: pd.DataFrame
    threshold: float
    training_metrics: dict[str, float]
    windows: dict[Scenario, pd.DataFrame]
    raw: dict[Scenario, pl.DataFrame]
    test: pl.DataFrame
    test_alerts: np.ndarray
    params: Params

    def training_segments(self) -> SegmentReport:
        """The training run's fairness report (its test period), computed on demand: the
        drift tests never pay for it."""
        return segment_report(self.raw["none"], self.test, self.test_alerts, self.params)


def simulate_world(
    seed: int,
    *,
    customers: int = 3000,
    window_days: int = 7,
    params: Params | None = None,
    scenarios: tuple[Scenario, ...] = SCENARIOS,
) -> ScenarioWorld:
    """The model and the windows of SCENARIOS (``none`` always) of one seed.

    Terminals scale with customers, as in the handbook. The world's ``params`` simulate
    what it simulated, so segments find each customer's region (`customer_regions`).
    """
    params = _world_params(params or Params(), seed, customers)
    train = params.train
    history_days = WARM_UP_DAYS + train.train_days + train.delay_days + train.test_days
    simulated = params.simulate.model_copy(update={"days": history_days + window_days})
    change = dt.datetime.combine(simulated.start + dt.timedelta(days=history_days), dt.time())
    streams = {
        scenario: simulate(simulated.model_copy(update={"scenario": scenario}))
        for scenario in dict.fromkeys(("none", *scenarios))
    }
    history = streams["none"].filter(pl.col(TX_DATETIME) < change)
    result = _train(history, params)
    windows, raw = {}, {}
    for scenario, stream in streams.items():
        raw[scenario] = pl.concat([history, stream.filter(pl.col(TX_DATETIME) >= change)])
        rows = build_features(raw[scenario], params.features).filter(pl.col(TX_DATETIME) >= change)
        scores = fraud_scores(result.selection.model, rows, result.features)
        windows[scenario] = as_logged(rows, scores, result.selection.threshold, result.features)
    return ScenarioWorld(
        reference=reference_sample(result).to_pandas(),
        threshold=result.selection.threshold,
        training_metrics=result.evaluation.metrics,
        windows=windows,
        raw=raw,
        test=result.selection.split.test,
        test_alerts=result.evaluation.scores >= result.selection.threshold,
        params=params,
    )


def _world_params(params: Params, seed: int, customers: int) -> Params:
    """PARAMS simulating CUSTOMERS customers (twice as many terminals) with SEED."""
    simulated = params.simulate.model_copy(
        update={"customers": customers, "terminals": 2 * customers, "seed": seed}
    )
    return params.model_copy(update={"simulate": simulated})


def _train(history: pl.DataFrame, params: Params) -> TrainingResult:
    """One candidate, fitted and evaluated as ``fraudops.modeling.steps`` does, minus the search.

    The alert threshold is the least-cost one on the test period's scores (the training
    flow takes it from validation folds, which the quick model skips).
    """
    features = feature_columns(params.features)
    split = final_split(build_features(history, params.features), params.train)
    model = fit(QUICK_MODEL, split.train, features, seed=params.train.seed, n_jobs=1)
    test_scores = fraud_scores(model, split.test, features)
    threshold = choose_threshold(
        split.test[TX_FRAUD].to_numpy(),
        test_scores,
        params.train.cost_missed_fraud,
        params.train.cost_false_alarm,
    )
    selection = Selection(model, QUICK_MODEL, split, pl.DataFrame(), threshold)
    source = DataSource(Path("simulated"), "simulated", "simulated")
    return TrainingResult(source, params, selection, evaluate_on_test(selection, params))


def as_logged(
    rows: pl.DataFrame, scores: np.ndarray, threshold: float, features: list[str]
) -> pd.DataFrame:
    """Scored feature rows as ``read_predictions`` returns them, every label present."""
    columns = predictions.c
    frame = rows.select(TRANSACTION_ID, TX_DATETIME, *features).to_pandas()
    frame[columns.customer_hash.name] = [f"c{customer}" for customer in rows[CUSTOMER_ID]]
    frame[columns.score.name] = scores
    frame[columns.decision.name] = scores >= threshold
    frame[columns.threshold.name] = threshold
    frame[LABEL] = pd.array(rows[TX_FRAUD].to_numpy(), dtype="Int8")
    return frame


def without_labels(window: pd.DataFrame) -> pd.DataFrame:
    """The same window before any of its labels arrived."""
    return window.assign(**{LABEL: pd.array([pd.NA] * len(window), dtype="Int8")})
