"""The flat tree walk gives XGBoost's own probabilities, bit for bit, or refuses the model."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from fraudops.modeling.tree_ensemble import FlatTreeEnsemble, UnsupportedBooster

pytestmark = pytest.mark.model


def _data(seed: int = 0, rows: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6)) * [1, 10, 100, 0.1, 1, 1]
    y = ((x[:, 0] + x[:, 1] / 10 > 0.8) ^ (rng.random(rows) < 0.05)).astype(int)
    x[rng.random(x.shape) < 0.05] = np.nan  # so that default directions are learnt
    return x, y


@pytest.mark.parametrize(
    "hyperparams",
    [
        {"max_depth": 3, "n_estimators": 50},
        {"max_depth": 6, "n_estimators": 30, "max_bin": 4096},
        # Loss-guided growth: unbalanced trees of uneven depth.
        {"grow_policy": "lossguide", "max_leaves": 11, "max_depth": 0, "n_estimators": 40},
        {"max_depth": 2, "n_estimators": 1, "base_score": 0.3},
    ],
    ids=["depth3", "depth6", "lossguide", "one-tree"],
)
def test_probabilities_equal_the_boosters_bit_for_bit(hyperparams: dict) -> None:
    x, y = _data()
    model = xgb.XGBClassifier(tree_method="hist", random_state=0, **hyperparams).fit(x, y)
    booster = model.get_booster()
    flat = FlatTreeEnsemble.from_booster(booster)

    fresh, _ = _data(seed=1, rows=2000)
    np.testing.assert_array_equal(flat.probabilities(fresh), booster.inplace_predict(fresh))
    np.testing.assert_array_equal(
        flat.margins(fresh), booster.inplace_predict(fresh, predict_type="margin")
    )
    # One row at a time (the serving path) is the same as the batch.
    singles = [flat.probabilities(row.reshape(1, -1))[0] for row in fresh[:20]]
    np.testing.assert_array_equal(singles, booster.inplace_predict(fresh[:20]))
    assert flat.agreement_error(booster, np.random.default_rng(0)) == 0.0


def test_values_on_a_threshold_go_right_as_in_xgboost() -> None:
    x, y = _data()
    booster = xgb.XGBClassifier(max_depth=3, n_estimators=20).fit(x, y).get_booster()
    flat = FlatTreeEnsemble.from_booster(booster)
    root = flat.roots[0]
    feature, threshold = int(flat.feature[root]), flat.threshold[root]
    rows = np.zeros((2, x.shape[1]))
    rows[:, feature] = [threshold, np.nextafter(threshold, np.float32(-np.inf))]
    np.testing.assert_array_equal(flat.probabilities(rows), booster.inplace_predict(rows))


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (xgb.XGBRegressor(n_estimators=5), "objective 'reg:squarederror'"),
        (xgb.XGBClassifier(n_estimators=5, booster="gblinear"), "booster 'gblinear'"),
    ],
    ids=["regression", "linear"],
)
def test_models_it_cannot_reproduce_are_refused(model: xgb.XGBModel, reason: str) -> None:
    x, y = _data(rows=300)
    booster = model.fit(x, y).get_booster()
    with pytest.raises(UnsupportedBooster, match=reason):
        FlatTreeEnsemble.from_booster(booster)


def test_rows_of_the_wrong_width_are_an_error() -> None:
    x, y = _data(rows=300)
    flat = FlatTreeEnsemble.from_booster(xgb.XGBClassifier(n_estimators=3).fit(x, y).get_booster())
    with pytest.raises(ValueError, match="expected rows of 6 features"):
        flat.probabilities(np.zeros((1, 5)))


def test_a_saved_walk_loads_with_the_same_arrays_and_scores(tmp_path) -> None:
    x, y = _data()
    booster = xgb.XGBClassifier(max_depth=4, n_estimators=25).fit(x, y).get_booster()
    flat = FlatTreeEnsemble.from_booster(booster)
    flat.save(tmp_path / "walk.npz")
    loaded = FlatTreeEnsemble.load(tmp_path / "walk.npz")
    assert (loaded.depth, loaded.n_features) == (flat.depth, flat.n_features)
    for name in ("roots", "feature", "threshold", "left", "default_left", "value"):
        assert getattr(loaded, name).dtype == getattr(flat, name).dtype
        np.testing.assert_array_equal(getattr(loaded, name), getattr(flat, name))
    fresh, _ = _data(seed=2, rows=500)
    np.testing.assert_array_equal(loaded.probabilities(fresh), booster.inplace_predict(fresh))
