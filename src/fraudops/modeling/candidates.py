"""Candidate models and their selection by prequential validation.

Three families, each a plain estimator that serving can call on a numpy row in
`feature_columns` order: scaled logistic regression (an sklearn Pipeline), random
forest, and XGBoost. Frauds are under 1 % of transactions, so every family takes a
`positive_weight` (class_weight / scale_pos_weight) that the grid may tune. Seeds and
thread counts are fixed so the same data and parameters give the same model.

Selection scores each candidate by its mean average precision over the validation
folds, which all lie before the final training window: the test period is never seen
until the winner is refitted and evaluated.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import polars as pl
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from xgboost import XGBClassifier

from fraudops.config import HyperValue, ModelFamily, TrainParams
from fraudops.data.schema import TX_FRAUD
from fraudops.data.split import TimeSplit, final_split, validation_splits
from fraudops.modeling.evaluation import choose_threshold, ranking_metrics

logger = logging.getLogger(__name__)

#: Hyper-parameter name of the class-imbalance weight, shared by every family.
POSITIVE_WEIGHT = "positive_weight"
#: Metric that ranks candidates; a key of `fraudops.modeling.evaluation.ranking_metrics`.
SELECTION_METRIC = "average_precision"

#: Families from cheapest to dearest to score one row in serving: near-ties in validation go
#: to the cheaper one (a forest of deep trees costs ~10 ms a row, boosted shallow trees ~1 ms).
SERVING_COST_ORDER: tuple[ModelFamily, ...] = ("logistic_regression", "xgboost", "random_forest")

Model: TypeAlias = Pipeline | RandomForestClassifier | XGBClassifier


@dataclass(frozen=True)
class Candidate:
    """One family with one setting of its hyper-parameters."""

    family: ModelFamily
    hyperparams: Mapping[str, HyperValue]

    @property
    def name(self) -> str:
        settings = ", ".join(f"{key}={value}" for key, value in sorted(self.hyperparams.items()))
        return f"{self.family}({settings})"


@dataclass(frozen=True)
class Selection:
    """The winning candidate refitted on the final training window, and how it won."""

    model: Model
    candidate: Candidate
    split: TimeSplit
    #: One row per candidate, best first: mean and std of each metric over the folds.
    validation: pl.DataFrame
    #: Least-cost alert threshold on the winner's pooled validation scores.
    threshold: float


def candidates(params: TrainParams) -> list[Candidate]:
    """Every grid point of every family in `params`, in a fixed order."""
    found = []
    for family, space in params.candidates.items():
        keys = sorted(space.grid)
        for values in itertools.product(*(space.grid[key] for key in keys)):
            found.append(Candidate(family, {**space.fixed, **dict(zip(keys, values, strict=True))}))
    return found


def positive_weight(setting: HyperValue, y: np.ndarray) -> float:
    """The weight of a fraud relative to a genuine transaction; "balanced" equalises classes."""
    if setting == "balanced":
        frauds = int(np.sum(y == 1))
        return (len(y) - frauds) / max(frauds, 1)
    if not isinstance(setting, int | float) or setting <= 0:
        raise ValueError(f"{POSITIVE_WEIGHT} must be a positive number or 'balanced': {setting!r}")
    return float(setting)


def make_model(candidate: Candidate, y_train: np.ndarray, *, seed: int, n_jobs: int) -> Model:
    """An unfitted estimator for `candidate`, its imbalance weight resolved on `y_train`."""
    settings: dict[str, Any] = dict(candidate.hyperparams)
    weight = positive_weight(settings.pop(POSITIVE_WEIGHT, 1), y_train)
    class_weight = {0: 1.0, 1: weight}
    match candidate.family:
        case "logistic_regression":
            linear = LogisticRegression(class_weight=class_weight, random_state=seed, **settings)
            return Pipeline([("scale", StandardScaler()), ("classify", linear)])
        case "random_forest":
            return RandomForestClassifier(
                class_weight=class_weight, random_state=seed, n_jobs=n_jobs, **settings
            )
        case "xgboost":
            return XGBClassifier(
                tree_method="hist",
                scale_pos_weight=weight,
                random_state=seed,
                n_jobs=n_jobs,
                **settings,
            )
    raise ValueError(f"unknown model family {candidate.family!r}")


def fit(
    candidate: Candidate, train: pl.DataFrame, features: list[str], *, seed: int, n_jobs: int
) -> Model:
    """`candidate` fitted on the rows of `train`, inputs as a numpy array in `features` order."""
    y = train[TX_FRAUD].to_numpy()
    model = make_model(candidate, y, seed=seed, n_jobs=n_jobs)
    model.fit(inputs(train, features), y)
    return model


def inputs(frame: pl.DataFrame, features: list[str]) -> np.ndarray:
    """The model input matrix: float64, columns in `features` order, as serving passes it."""
    return frame.select(features).to_numpy().astype(np.float64, copy=False)


def fraud_scores(model: Model, frame: pl.DataFrame, features: list[str]) -> np.ndarray:
    """Predicted fraud probability of each row of `frame`."""
    return model.predict_proba(inputs(frame, features))[:, 1]


def fold_scores(
    candidate: Candidate, fold: TimeSplit, features: list[str], *, seed: int, n_jobs: int
) -> np.ndarray:
    """Scores of FOLD's test rows by CANDIDATE fitted on its training rows.

    One independent unit of the search: a Dask worker runs exactly this, so both paths fit
    and score the same way.
    """
    model = fit(candidate, fold.train, features, seed=seed, n_jobs=n_jobs)
    return fraud_scores(model, fold.test, features)


@dataclass(frozen=True)
class Ranking:
    """The candidates ranked on the validation folds: everything of a `Selection` but the refit."""

    winner: Candidate
    validation: pl.DataFrame
    threshold: float


def rank_candidates(
    folds: list[TimeSplit],
    scores: Mapping[str, list[np.ndarray]],
    found: list[Candidate],
    params: TrainParams,
) -> Ranking:
    """Rank FOUND by their SCORES (by candidate name, one array per fold, in FOLDS order)."""
    labels = [fold.test[TX_FRAUD].to_numpy() for fold in folds]
    rows = []
    for candidate in found:
        per_fold = [
            ranking_metrics(fold.test, scored, params.top_k)
            for fold, scored in zip(folds, scores[candidate.name], strict=True)
        ]
        rows.append(_summary_row(candidate, per_fold))
        name, value = candidate.name, rows[-1][SELECTION_METRIC]
        logger.info("%s: validation %s %.4f", name, SELECTION_METRIC, value)
    validation = pl.DataFrame(rows).sort(SELECTION_METRIC, descending=True, maintain_order=True)
    by_name = {candidate.name: candidate for candidate in found}
    winner = by_name[_cheapest_near_best(validation, params.selection_tolerance)]
    threshold = choose_threshold(
        np.concatenate(labels),
        np.concatenate(scores[winner.name]),
        params.cost_missed_fraud,
        params.cost_false_alarm,
    )
    return Ranking(winner, validation, threshold)


def select_model(frame: pl.DataFrame, features: list[str], params: TrainParams) -> Selection:
    """Choose a candidate on the validation folds, refit it on the final training window."""
    folds = validation_splits(frame, params)
    found = candidates(params)
    scores = {
        candidate.name: [
            fold_scores(candidate, fold, features, seed=params.seed, n_jobs=params.n_jobs)
            for fold in folds
        ]
        for candidate in found
    }
    ranking = rank_candidates(folds, scores, found, params)
    split = final_split(frame, params)
    return Selection(
        model=fit(ranking.winner, split.train, features, seed=params.seed, n_jobs=params.n_jobs),
        candidate=ranking.winner,
        split=split,
        validation=ranking.validation,
        threshold=ranking.threshold,
    )


def _cheapest_near_best(validation: pl.DataFrame, tolerance: float) -> str:
    """The candidate cheapest to serve among those within `tolerance` of the best score."""
    metric = pl.col(SELECTION_METRIC)
    near_best = validation.filter(metric >= metric.max() - tolerance)
    rows = near_best.iter_rows(named=True)
    cheapest: str = min(rows, key=lambda row: SERVING_COST_ORDER.index(row["family"]))["candidate"]
    return cheapest


def _summary_row(candidate: Candidate, per_fold: list[dict[str, float]]) -> dict[str, Any]:
    row: dict[str, Any] = {"candidate": candidate.name, "family": candidate.family}
    for metric in per_fold[0]:
        values = [fold[metric] for fold in per_fold]
        row[metric] = float(np.mean(values))
        row[f"{metric}_std"] = float(np.std(values))
    return row
