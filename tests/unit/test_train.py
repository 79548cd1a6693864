"""Candidate models: determinism, class weights, selection on validation folds."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from fraudops.config import CandidateGrid, TrainParams
from fraudops.data.schema import CUSTOMER_ID, TRANSACTION_ID, TX_DATETIME, TX_FRAUD
from fraudops.modeling.candidates import (
    Candidate,
    candidates,
    fit,
    fraud_scores,
    inputs,
    make_model,
    positive_weight,
    select_model,
)

pytestmark = pytest.mark.model

FEATURES = ["x1", "x2", "x3"]
START = dt.datetime(2018, 4, 1)


def synthetic_frame(*, interaction: bool, days: int = 20, per_day: int = 250) -> pl.DataFrame:
    """Transactions whose fraud odds depend on x1 (linear) or on the sign of x1 * x2."""
    rng = np.random.default_rng(11)
    n = days * per_day
    x = rng.normal(size=(n, len(FEATURES)))
    signal = 4 * np.sign(x[:, 0] * x[:, 1]) if interaction else 2.5 * x[:, 0]
    fraud = rng.random(n) < 1 / (1 + np.exp(-(signal - 4)))
    seconds = np.sort(rng.integers(0, days * 86_400, n))
    return pl.DataFrame(
        {
            TRANSACTION_ID: np.arange(n),
            TX_DATETIME: [START + dt.timedelta(seconds=int(s)) for s in seconds],
            CUSTOMER_ID: rng.integers(0, 500, n),
            TX_FRAUD: fraud.astype(np.int8),
            **{name: x[:, i] for i, name in enumerate(FEATURES)},
        }
    )


@pytest.fixture(scope="module")
def linear_frame() -> pl.DataFrame:
    return synthetic_frame(interaction=False)


def small_params(**candidate_grids: CandidateGrid) -> TrainParams:
    return TrainParams(
        train_days=4,
        delay_days=2,
        test_days=3,
        validation_folds=2,
        n_jobs=2,
        top_k=20,
        candidates=candidate_grids,
    )


QUICK = {
    "logistic_regression": CandidateGrid(grid={"C": [0.1, 10.0]}),
    "random_forest": CandidateGrid(fixed={"n_estimators": 20, "max_depth": 6}),
    "xgboost": CandidateGrid(fixed={"n_estimators": 20, "max_depth": 3}),
}


def test_candidates_cross_each_grid_and_keep_fixed_settings() -> None:
    params = small_params(
        xgboost=CandidateGrid(
            fixed={"n_estimators": 50}, grid={"max_depth": [3, 6], "positive_weight": [1, 5]}
        )
    )

    found = candidates(params)

    assert len(found) == 4
    assert {c.hyperparams["n_estimators"] for c in found} == {50}
    assert {(c.hyperparams["max_depth"], c.hyperparams["positive_weight"]) for c in found} == {
        (3, 1),
        (3, 5),
        (6, 1),
        (6, 5),
    }
    assert len({c.name for c in found}) == 4


@pytest.mark.parametrize("family", ["logistic_regression", "random_forest", "xgboost"])
def test_training_twice_gives_the_same_predictions(family: str, linear_frame: pl.DataFrame) -> None:
    candidate = Candidate(family, {**QUICK[family].fixed, "positive_weight": 3})
    train = linear_frame.head(2000)

    first = fraud_scores(fit(candidate, train, FEATURES, seed=0, n_jobs=2), linear_frame, FEATURES)
    second = fraud_scores(fit(candidate, train, FEATURES, seed=0, n_jobs=2), linear_frame, FEATURES)

    np.testing.assert_allclose(first, second, rtol=0, atol=1e-6)
    assert first.std() > 0


def test_positive_weight_reaches_each_family_native_setting() -> None:
    y = np.array([0] * 90 + [1] * 10)

    assert positive_weight("balanced", y) == 9.0
    linear = make_model(
        Candidate("logistic_regression", {"positive_weight": 4}), y, seed=0, n_jobs=1
    )
    forest = make_model(
        Candidate("random_forest", {"positive_weight": "balanced"}), y, seed=0, n_jobs=1
    )
    boosted = make_model(Candidate("xgboost", {"positive_weight": 4}), y, seed=0, n_jobs=1)
    assert linear.named_steps["classify"].class_weight == {0: 1.0, 1: 4.0}
    assert forest.class_weight == {0: 1.0, 1: 9.0}
    assert boosted.get_params()["scale_pos_weight"] == 4.0
    assert boosted.get_params()["tree_method"] == "hist"
    with pytest.raises(ValueError, match="positive_weight"):
        positive_weight(-1, y)


@pytest.mark.parametrize("family", ["logistic_regression", "xgboost"])
def test_weighting_frauds_raises_their_predicted_probability(
    family: str, linear_frame: pl.DataFrame
) -> None:
    train = linear_frame.head(2000)

    def mean_score(weight: float) -> float:
        candidate = Candidate(family, {**QUICK[family].fixed, "positive_weight": weight})
        model = fit(candidate, train, FEATURES, seed=0, n_jobs=1)
        return float(fraud_scores(model, train, FEATURES).mean())

    assert mean_score(10) > 2 * mean_score(1)


def test_selection_picks_the_family_that_fits_the_data() -> None:
    frame = synthetic_frame(interaction=True)
    params = small_params(
        logistic_regression=QUICK["logistic_regression"], xgboost=QUICK["xgboost"]
    )

    selection = select_model(frame, FEATURES, params)

    table = selection.validation
    assert table.height == 3
    assert table["candidate"][0] == selection.candidate.name
    assert selection.candidate.family == "xgboost"
    assert table["average_precision"].is_sorted(descending=True)
    best_linear = table.filter(pl.col("family") == "logistic_regression")["average_precision"]
    assert table["average_precision"][0] > best_linear.max() + 0.2
    assert {"roc_auc_std", "card_precision_at_20"} <= set(table.columns)


def test_selected_model_is_refitted_on_the_final_window_and_serves_numpy_rows(
    linear_frame: pl.DataFrame,
) -> None:
    params = small_params(logistic_regression=QUICK["logistic_regression"])

    selection = select_model(linear_frame, FEATURES, params)

    last_day = linear_frame[TX_DATETIME].max().date()
    assert selection.split.test_end == last_day
    assert selection.split.train_end == last_day - dt.timedelta(days=5)
    refit = fit(selection.candidate, selection.split.train, FEATURES, seed=0, n_jobs=2)
    row = inputs(selection.split.test, FEATURES)[:1]
    assert selection.model.predict_proba(row)[0, 1] == pytest.approx(refit.predict_proba(row)[0, 1])
    assert 0 < selection.threshold < 1


def test_near_ties_go_to_the_model_cheapest_to_serve() -> None:
    from fraudops.modeling.candidates import _cheapest_near_best

    validation = pl.DataFrame(
        {
            "candidate": ["forest", "boosted", "linear"],
            "family": ["random_forest", "xgboost", "logistic_regression"],
            "average_precision": [0.680, 0.677, 0.600],
        }
    )
    assert _cheapest_near_best(validation, tolerance=0.005) == "boosted"
    assert _cheapest_near_best(validation, tolerance=0.0) == "forest"
    assert _cheapest_near_best(validation, tolerance=0.1) == "linear"
