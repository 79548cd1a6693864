"""Warm-start retraining: the champion's trees kept, more boosting rounds on newer labels.

A full retrain searches candidates and fits from scratch on one training window, so it
forgets whatever the window does not show and costs the whole search each time. A warm
start keeps every tree of the champion and adds ``learning.warm_start_rounds`` rounds
(XGBoost's ``xgb_model=``) fitted on the labelled days the champion has not seen: the
days after its training window up to the end of the new training window. The new rounds
fit the champion's residuals on recent data, so an update costs a few trees, and the
model follows a drift by correcting itself rather than by being replaced.

What it does not do, by design, and what guards it: it keeps the champion's
hyper-parameters and alert threshold (boosting on log loss keeps scores near calibrated,
and the threshold follows the cost ratio); the model grows by a few trees per update, so
a full retrain now and then resets it (``learning.mode``); and the result is judged by the
same promotion gate on the same holdout as a full retrain, so a warm start that drifts
away from the data never becomes champion. Only an XGBoost champion scored on today's
features can be continued; anything else raises `WarmStartUnavailable` and retraining
falls back to a full retrain.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import xgboost as xgb

from fraudops.config import Params
from fraudops.data.schema import TX_DATETIME, TX_FRAUD
from fraudops.data.split import TimeSplit, final_split
from fraudops.features.definitions import feature_columns
from fraudops.modeling.candidates import Candidate, Selection, inputs, make_model
from fraudops.modeling.steps import ModelCard, NativeModel

#: Hyper-parameter that records how many rounds the last warm start added.
WARM_START_ROUNDS = "warm_start_rounds"


class WarmStartUnavailable(Exception):
    """The champion cannot be continued on this data; the message says why."""


def continue_boosting(
    booster: xgb.Booster,
    candidate: Candidate,
    window: pl.DataFrame,
    features: list[str],
    *,
    rounds: int,
    seed: int,
    n_jobs: int,
) -> xgb.XGBClassifier:
    """BOOSTER with ROUNDS more trees fitted on WINDOW, with CANDIDATE's settings.

    The booster is not changed: XGBoost copies it before adding trees. The class weight is
    resolved on WINDOW, as a full fit resolves it on its training window.
    """
    y = window[TX_FRAUD].to_numpy()
    settings = dict(candidate.hyperparams)
    settings.pop(WARM_START_ROUNDS, None)
    settings["n_estimators"] = rounds
    model = make_model(Candidate("xgboost", settings), y, seed=seed, n_jobs=n_jobs)
    if not isinstance(model, xgb.XGBClassifier):  # make_model gives one for "xgboost"
        raise TypeError(f"expected an XGBoost classifier, got {type(model).__name__}")
    model.fit(inputs(window, features), y, xgb_model=booster)
    return model


def warm_start_selection(
    champion: NativeModel, card: ModelCard, frame: pl.DataFrame, params: Params
) -> Selection:
    """The champion continued on FRAME's labelled days after its training window.

    FRAME is the feature frame a full retrain would read; its final split gives the same
    test period (the holdout the gate compares on) and the end of the new training window.
    Raises `WarmStartUnavailable` when the champion is not an XGBoost booster on today's
    features, or when no labelled day lies between its training window and the new one's end.
    """
    features = feature_columns(params.features)
    if not isinstance(champion, xgb.Booster) or card.family != "xgboost":
        raise WarmStartUnavailable(f"the champion is a {card.family} model, not XGBoost")
    if list(card.features) != features:
        raise WarmStartUnavailable("the champion was trained on other features than params give")
    split = final_split(frame, params.train)
    first = dt.date.fromisoformat(card.train_end) + dt.timedelta(days=1)
    day = pl.col(TX_DATETIME).dt.date()
    window = frame.filter(day.is_between(first, split.train_end))
    if window.is_empty() or window[TX_FRAUD].sum() == 0:
        raise WarmStartUnavailable(
            f"no labelled day with a fraud from {first} to {split.train_end}, "
            f"after the champion's training window ({card.train_start}..{card.train_end})"
        )
    rounds = params.learning.warm_start_rounds
    total = champion.num_boosted_rounds() + rounds
    base = Candidate("xgboost", dict(card.hyperparams))
    model = continue_boosting(
        champion,
        base,
        window,
        features,
        rounds=rounds,
        seed=params.train.seed,
        n_jobs=params.train.n_jobs,
    )
    candidate = Candidate(
        "xgboost", {**card.hyperparams, "n_estimators": total, WARM_START_ROUNDS: rounds}
    )
    trained = TimeSplit(
        train=window,
        test=split.test,
        train_start=first,
        train_end=split.train_end,
        test_start=split.test_start,
        test_end=split.test_end,
    )
    validation = pl.DataFrame({"candidate": [candidate.name], "family": [candidate.family]})
    return Selection(model, candidate, trained, validation, card.threshold)
