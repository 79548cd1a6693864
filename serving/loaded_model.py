"""One registered model version in memory: its row layout, scores, alerts and explanations.

Scoring runs on one numpy row with one thread: no pyfunc wrapper, no pandas frame, and no
thread pool spinning against the web server for the same two cores. An XGBoost booster's
trees are walked by `fraudops.modeling.tree_ensemble` (a tenth of the booster's fixed cost
per call), after a check at load that it agrees with the booster; scikit-learn models use
``predict_proba``. `serving.models` loads these by alias and swaps them as a set.

The estimator itself is behind an `EstimatorSource`, loaded on first use: a model whose
checked tree walk comes from serving's disk cache scores without it, so a restarted server
answers before XGBoost and scikit-learn are even imported (they load in the background,
for explanations). Nothing here imports either library at module level, for the same reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from fraudops.modeling.tree_ensemble import FlatTreeEnsemble, UnsupportedBooster

if TYPE_CHECKING:
    import xgboost as xgb
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    from fraudops.modeling.steps import NativeModel

logger = logging.getLogger(__name__)

#: The key of the intercept (bias) term in `LoadedModel.contributions`.
BIAS = "bias"
#: Largest score difference from the booster accepted for the flat walk: a few float32
#: roundings of the logistic function, never a different path through a tree.
FLAT_TREES_TOLERANCE = 1e-6

#: The scale contributions add up on: log-odds (XGBoost margin, logistic regression logit)
#: or probability (a random forest's averaged leaf values).
ContributionScale = Literal["log_odds", "probability"]


class EstimatorSource:
    """A model's estimator, loaded on first use, once for every copy of the model that
    shares this source (champion and challenger holding one version share it)."""

    def __init__(self, load: Callable[[], NativeModel]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._estimator: NativeModel | None = None

    @classmethod
    def of(cls, estimator: NativeModel) -> EstimatorSource:
        """A source of an estimator already in memory."""
        source = cls(lambda: estimator)
        source.get()
        return source

    @property
    def loaded(self) -> bool:
        return self._estimator is not None

    def get(self) -> NativeModel:
        if self._estimator is None:
            with self._lock:
                if self._estimator is None:
                    estimator = self._load()
                    _single_threaded(estimator)
                    self._estimator = estimator
        return self._estimator


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """One registered version in memory, with what serving needs to use and report it."""

    name: str
    version: str
    alias: str
    run_id: str | None
    family: str
    threshold: float
    feature_names: tuple[str, ...]
    source: EstimatorSource = field(repr=False)
    #: True when this model came from the disk cache because the registry was away.
    from_cache: bool = False
    #: Walk an XGBoost booster's trees in numpy (``serve_flat_trees``); False: the booster.
    flat_walk: bool = True
    #: The booster's trees as flat arrays, when they reproduce the booster. Given when a
    #: checked walk was kept on disk; otherwise compiled and checked here.
    flat_trees: FlatTreeEnsemble | None = field(default=None, repr=False)
    loaded_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def __post_init__(self) -> None:
        if not self.flat_walk:
            object.__setattr__(self, "flat_trees", None)
        elif self.flat_trees is None and self.family == "xgboost":
            booster = cast("xgb.Booster", self.estimator)
            object.__setattr__(self, "flat_trees", _flat_trees(booster, self.version))
        if self.flat_trees is None:
            self.source.get()  # scored by the estimator: loaded now, not on a request

    @property
    def estimator(self) -> NativeModel:
        """The native model (loaded on first use when the flat walk scores without it)."""
        return self.source.get()

    @property
    def contribution_scale(self) -> ContributionScale:
        return "probability" if self.family == "random_forest" else "log_odds"

    def row(self, features: Mapping[str, float]) -> np.ndarray:
        """FEATURES as a float64 row in this model's input order (KeyError names a gap)."""
        return np.array([features[name] for name in self.feature_names], dtype=np.float64)

    def score(self, row: np.ndarray) -> float:
        """The fraud probability of one row."""
        return float(self.scores(row.reshape(1, -1))[0])

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Fraud probabilities of a matrix of rows (a batch request)."""
        if self.flat_trees is not None:
            return self.flat_trees.probabilities(rows)
        scores: np.ndarray  # both libraries type their predictions as Any
        estimator = self.estimator
        if self.family == "xgboost":
            scores = cast("xgb.Booster", estimator).inplace_predict(rows)
        else:
            scores = cast("Pipeline", estimator).predict_proba(rows)[:, 1]
        return scores

    def decide(self, score: float) -> bool:
        """Alert when the score reaches the threshold chosen in training (same rule)."""
        return score >= self.threshold

    def contributions(self, row: np.ndarray) -> dict[str, float]:
        """Each input's share of this row's score, plus `BIAS`; they sum to the score on
        `contribution_scale`.

        XGBoost: exact tree SHAP values of the margin. Logistic regression: coefficient times
        the standardised input, bias the intercept. Random forest: each tree's path
        decomposition (the change in leaf probability at every split, credited to the split's
        feature), averaged over trees; bias is the mean root probability.
        """
        x = row.reshape(1, -1)
        estimator = self.estimator
        if self.family == "xgboost":
            import xgboost as xgb  # loaded already: the booster came with it

            booster = cast("xgb.Booster", estimator)
            values = booster.predict(xgb.DMatrix(x, nthread=1), pred_contribs=True)[0]
        elif self.family == "logistic_regression":
            values = _linear_contributions(cast("Pipeline", estimator), x)
        else:
            values = _forest_contributions(cast("RandomForestClassifier", estimator), x)
        return dict(zip((*self.feature_names, BIAS), map(float, values), strict=True))


def _single_threaded(estimator: NativeModel) -> None:
    """One thread per prediction: on a small box, predictor threads fight the server's."""
    if hasattr(estimator, "set_param"):  # an XGBoost booster
        cast("xgb.Booster", estimator).set_param({"nthread": 1})
    elif hasattr(estimator, "n_jobs"):  # a random forest
        cast("RandomForestClassifier", estimator).n_jobs = 1


def _flat_trees(booster: xgb.Booster, version: str) -> FlatTreeEnsemble | None:
    """The flat walk of BOOSTER if it gives the booster's own scores, else None (logged)."""
    try:
        flat = FlatTreeEnsemble.from_booster(booster)
    except UnsupportedBooster as reason:
        logger.info("model version %s: scored by the booster (%s)", version, reason)
        return None
    error = flat.agreement_error(booster, np.random.default_rng(0))
    if error > FLAT_TREES_TOLERANCE:
        logger.warning(
            "model version %s: flat trees differ from the booster by %.2g; scored by the booster",
            version,
            error,
        )
        return None
    return flat


def _linear_contributions(pipeline: Pipeline, x: np.ndarray) -> np.ndarray:
    transformed = pipeline[:-1].transform(x)[0]
    linear = pipeline[-1]
    return np.append(linear.coef_[0] * transformed, linear.intercept_[0])


def _forest_contributions(forest: RandomForestClassifier, x: np.ndarray) -> np.ndarray:
    totals = np.zeros(x.shape[1] + 1)
    for tree in forest.estimators_:
        structure = tree.tree_
        # Node ids grow from root to leaf, so the sorted path is the walk down the tree.
        path = np.sort(tree.decision_path(x).indices)
        value = structure.value[path, 0, :]
        fraud = value[:, 1] / value.sum(axis=1)
        np.add.at(totals, structure.feature[path[:-1]], np.diff(fraud))
        totals[-1] += fraud[0]
    return totals / len(forest.estimators_)
