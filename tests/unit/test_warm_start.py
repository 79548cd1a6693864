"""A warm start keeps the champion's trees and adds rounds fitted on the days it has not seen."""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np
import polars as pl
import pytest
import xgboost as xgb

from fraudops.config import LearningParams, Params, SimulateParams, TrainParams
from fraudops.data.schema import TX_DATETIME
from fraudops.data.simulate import simulate
from fraudops.data.split import final_split
from fraudops.features.definitions import build_features, feature_columns
from fraudops.modeling.candidates import Candidate, fit, inputs
from fraudops.modeling.steps import ModelCard, native_model
from fraudops.modeling.warm_start import (
    WARM_START_ROUNDS,
    WarmStartUnavailable,
    warm_start_selection,
)

pytestmark = pytest.mark.model

ROUNDS = 7
CHAMPION = Candidate("xgboost", {"n_estimators": 20, "max_depth": 3, "learning_rate": 0.2})
PARAMS = Params(
    train=TrainParams(validation_folds=1, n_jobs=1),
    learning=LearningParams(warm_start_rounds=ROUNDS),
)


@functools.cache
def _features() -> pl.DataFrame:
    raw = simulate(SimulateParams(customers=300, terminals=600, days=60, seed=11))
    return build_features(raw, PARAMS.features)


def _champion(days_before: int) -> tuple[xgb.Booster, ModelCard]:
    """A champion trained as the flow trains one, on data that ended DAYS_BEFORE earlier."""
    frame = _features()
    last = frame[TX_DATETIME].max().date() - dt.timedelta(days=days_before)
    older = frame.filter(pl.col(TX_DATETIME).dt.date() <= last)
    split = final_split(older, PARAMS.train)
    features = feature_columns(PARAMS.features)
    model = fit(CHAMPION, split.train, features, seed=0, n_jobs=1)
    card = ModelCard(
        family="xgboost",
        candidate=CHAMPION.name,
        hyperparams=dict(CHAMPION.hyperparams),
        features=features,
        threshold=0.05,
        data_version="v1",
        **split.dates(),
    )
    return native_model(model), card


def test_the_champions_trees_stay_and_the_new_rounds_fit_the_unseen_days() -> None:
    champion, card = _champion(days_before=5)
    frame = _features()

    selection = warm_start_selection(champion, card, frame, PARAMS)

    booster = selection.model.get_booster()
    assert booster.num_boosted_rounds() == 20 + ROUNDS
    x = inputs(final_split(frame, PARAMS.train).test, card.features)
    # The first 20 trees are the champion's: the same margin on every row.
    np.testing.assert_array_equal(
        booster[:20].inplace_predict(x, predict_type="margin"),
        champion.inplace_predict(x, predict_type="margin"),
    )
    assert not np.array_equal(booster.inplace_predict(x), champion.inplace_predict(x))
    # The champion object itself is left as it was.
    assert champion.num_boosted_rounds() == 20
    # The new rounds saw exactly the days after the champion's window, up to the new one's end.
    days = selection.split.train[TX_DATETIME].dt.date()
    full = final_split(frame, PARAMS.train)
    assert days.min() == dt.date.fromisoformat(card.train_end) + dt.timedelta(days=1)
    assert days.max() == full.train_end == selection.split.train_end
    assert selection.split.test.equals(full.test)
    assert selection.threshold == card.threshold
    assert selection.candidate.hyperparams["n_estimators"] == 20 + ROUNDS
    assert selection.candidate.hyperparams[WARM_START_ROUNDS] == ROUNDS


def test_a_warm_started_champion_is_continued_again_on_later_days() -> None:
    champion, card = _champion(days_before=8)
    frame = _features()
    earlier = frame.filter(
        pl.col(TX_DATETIME).dt.date() <= frame[TX_DATETIME].max().date() - dt.timedelta(days=4)
    )
    first = warm_start_selection(champion, card, earlier, PARAMS)
    card = ModelCard.of(first, list(card.features), "v2")

    second = warm_start_selection(native_model(first.model), card, frame, PARAMS)

    assert second.model.get_booster().num_boosted_rounds() == 20 + 2 * ROUNDS
    assert second.split.train_start == first.split.train_end + dt.timedelta(days=1)


def test_without_an_unseen_labelled_day_there_is_no_warm_start() -> None:
    champion, card = _champion(days_before=0)

    with pytest.raises(WarmStartUnavailable, match="no labelled day"):
        warm_start_selection(champion, card, _features(), PARAMS)


def test_only_an_xgboost_champion_on_todays_features_is_continued() -> None:
    champion, card = _champion(days_before=5)
    forest = Candidate("random_forest", {"n_estimators": 5})
    split = final_split(_features(), PARAMS.train)
    other = fit(forest, split.train, list(card.features), seed=0, n_jobs=1)

    with pytest.raises(WarmStartUnavailable, match="random_forest"):
        warm_start_selection(
            other, ModelCard(**{**card.to_dict(), "family": "random_forest"}), _features(), PARAMS
        )
    with pytest.raises(WarmStartUnavailable, match="other features"):
        renamed = ModelCard(**{**card.to_dict(), "features": card.features[:-1]})
        warm_start_selection(champion, renamed, _features(), PARAMS)
