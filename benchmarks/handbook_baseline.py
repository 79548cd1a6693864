"""The Fraud Detection Handbook's baseline, computed by the project: its features and its model.

The handbook (Le Borgne et al., Ch.3 ``BaselineFeatureTransformation``) computes its 15
inputs with exact rolling windows over timestamps, not over calendar days:

* customer, window w: the customer's transactions in (t - w, t], the current one included,
  and of those at the same second only the ones up to the current row (pandas time rolling);
* terminal, window w, delay d: the terminal's transactions in (t - d - w, t - d]; a fraud
  label is used only once it is at least d old, and the current transaction never counts.

Here they are written with sorted arrays and binary search (one pass per window, seconds
for 1.8 M rows) and given the project's column names, so the project's splits, model
selection and metrics run on them unchanged. ``tests/unit/test_handbook_baseline.py``
checks them against a hand-computed example and against the handbook's own pandas code.

The model is the handbook's Ch.5 XGBoost family (its best), with the defaults of the
XGBoost it used (before 2.0: exact greedy splits, base score 0.5) and its scaled inputs;
its grid is searched on the project's validation folds only, by the project's metric.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from fraudops.config import FeatureParams, TrainParams
from fraudops.data.schema import (
    CUSTOMER_ID,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
)
from fraudops.data.split import validation_splits
from fraudops.features.definitions import (
    CENTS_PER_UNIT,
    KEY_COLUMNS,
    TX_DURING_NIGHT,
    TX_DURING_WEEKEND,
    WEEKEND_ISO_WEEKDAYS,
    customer_avg_amount_column,
    customer_nb_tx_column,
    feature_columns,
    terminal_nb_tx_column,
    terminal_risk_column,
)
from fraudops.modeling.candidates import SELECTION_METRIC, fraud_scores, inputs
from fraudops.modeling.evaluation import ranking_metrics

SECONDS_PER_DAY = 86_400

#: Handbook Ch.5 XGBoost grid (its best family): trees x learning rate x depth.
HANDBOOK_XGB_GRID: dict[str, tuple[float, ...]] = {
    "n_estimators": (25, 50, 100),
    "learning_rate": (0.1, 0.3),
    "max_depth": (3, 6, 9),
}


# --- features ------------------------------------------------------------------------------


def window_totals(
    entity: np.ndarray,
    seconds: np.ndarray,
    values: np.ndarray,
    *,
    lag_s: int,
    length_s: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: how many rows of its entity fall in (t - lag - length, t - lag], and their sum.

    Rows are in time order (ties in the order given). With ``lag_s == 0`` the window ends
    at the row itself: rows of the same second that come after it are out, as in pandas'
    time rolling. With ``lag_s > 0`` every row at exactly t - lag is in.
    """
    n = len(entity)
    order = np.lexsort((seconds, entity))  # stable: ties keep the given order
    low = int(seconds.min()) - lag_s - length_s - 1
    span = int(seconds.max()) - low + 1
    key = entity[order].astype(np.int64) * span + (seconds[order] - low)
    prefix = np.concatenate([[0], np.cumsum(values[order], dtype=np.int64)])
    # Lag 0: the window ends at the row itself (sorted position p ends at p + 1).
    end = np.arange(1, n + 1) if lag_s == 0 else np.searchsorted(key, key - lag_s, side="right")
    start = np.searchsorted(key, key - lag_s - length_s, side="right")
    count, total = np.empty(n, np.int64), np.empty(n, np.int64)
    count[order], total[order] = end - start, prefix[end] - prefix[start]
    return count, total


def handbook_features(raw: pl.DataFrame, params: FeatureParams) -> pl.DataFrame:
    """``KEY_COLUMNS`` and ``feature_columns(params)`` with the handbook's definitions.

    Rows sorted by transaction_id, float64 features, as ``build_features`` returns them.
    """
    tx = raw.sort(TRANSACTION_ID)
    seconds = tx[TX_DATETIME].dt.epoch("s").to_numpy()
    customer, terminal = tx[CUSTOMER_ID].to_numpy(), tx[TERMINAL_ID].to_numpy()
    cents = (tx[TX_AMOUNT] * CENTS_PER_UNIT).round().cast(pl.Int64).to_numpy()
    fraud = tx[TX_FRAUD].cast(pl.Int64).to_numpy()
    columns: dict[str, np.ndarray] = {}
    for w in params.customer_windows_days:
        nb, total = window_totals(customer, seconds, cents, lag_s=0, length_s=w * SECONDS_PER_DAY)
        columns[customer_nb_tx_column(w)] = nb.astype(np.float64)
        columns[customer_avg_amount_column(w)] = total / (nb * CENTS_PER_UNIT)
    delay_s = params.label_delay_days * SECONDS_PER_DAY
    for w in params.terminal_windows_days:
        nb, frauds = window_totals(
            terminal, seconds, fraud, lag_s=delay_s, length_s=w * SECONDS_PER_DAY
        )
        columns[terminal_nb_tx_column(w)] = nb.astype(np.float64)
        columns[terminal_risk_column(w)] = np.divide(
            frauds, nb, out=np.zeros(len(nb)), where=nb > 0
        )
    stamp = pl.col(TX_DATETIME).dt
    return (
        tx.select(
            *KEY_COLUMNS,
            TX_AMOUNT,
            stamp.weekday().is_in(WEEKEND_ISO_WEEKDAYS).alias(TX_DURING_WEEKEND),
            (stamp.hour() <= params.night_last_hour).alias(TX_DURING_NIGHT),
        )
        .with_columns(*(pl.Series(name, values) for name, values in columns.items()))
        .select(*KEY_COLUMNS, pl.col(feature_columns(params)).cast(pl.Float64))
    )


# --- model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HandbookXGBoost:
    """One point of the handbook's XGBoost grid."""

    n_estimators: int
    learning_rate: float
    max_depth: int

    @property
    def name(self) -> str:
        return f"XGBoost {self.n_estimators}/{self.learning_rate}/{self.max_depth} (handbook)"

    def make(self, *, seed: int, n_jobs: int) -> Pipeline:
        """Scaled inputs and XGBoost with its pre-2.0 defaults, as the handbook ran it."""
        return make_pipeline(
            StandardScaler(),
            XGBClassifier(
                n_estimators=self.n_estimators,
                learning_rate=self.learning_rate,
                max_depth=self.max_depth,
                tree_method="exact",
                base_score=0.5,
                random_state=seed,
                n_jobs=n_jobs,
            ),
        )

    def fit(self, train: pl.DataFrame, features: list[str], *, seed: int, n_jobs: int) -> Pipeline:
        model = self.make(seed=seed, n_jobs=n_jobs)
        model.fit(inputs(train, features), train[TX_FRAUD].to_numpy())
        return model


def handbook_grid() -> list[HandbookXGBoost]:
    """Every point of ``HANDBOOK_XGB_GRID``, in a fixed order."""
    return [
        HandbookXGBoost(int(n), lr, int(depth))
        for n, lr, depth in itertools.product(*HANDBOOK_XGB_GRID.values())
    ]


@dataclass(frozen=True)
class HandbookSelection:
    """The grid point with the best mean validation score, and every point's mean."""

    winner: HandbookXGBoost
    validation: dict[str, float]


def select_handbook_model(
    frame: pl.DataFrame, features: list[str], params: TrainParams
) -> HandbookSelection:
    """The handbook's grid searched on the project's validation folds (``validation_splits``).

    Those folds end with the final training week: no test day is seen. The score is the
    project's ``SELECTION_METRIC`` (average precision), the handbook's pick for AP.
    """
    folds = validation_splits(frame, params)
    means = {}
    for point in handbook_grid():
        per_fold = []
        for fold in folds:
            model = point.fit(fold.train, features, seed=params.seed, n_jobs=params.n_jobs)
            scores = fraud_scores(model, fold.test, features)
            per_fold.append(ranking_metrics(fold.test, scores, params.top_k)[SELECTION_METRIC])
        means[point.name] = float(np.mean(per_fold))
    best = max(handbook_grid(), key=lambda point: means[point.name])
    return HandbookSelection(best, means)
