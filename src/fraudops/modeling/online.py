"""An online learner: river's scaled logistic regression, taught one mini-batch of labels at a time.

Batch models learn a window of labels once per retraining; this one learns every label soon
after it arrives, and never sees a label twice. It is river's ``StandardScaler |
LogisticRegression`` trained by Adam, with a weight on frauds (``learning.online``). A
linear model because it learns a mini-batch at numpy speed (river's tree learners go one
row at a time in Python) and its state is small: weights, running means, Adam's moments.
What it gives up against boosted trees is measured by ``benchmarks/bench_learning_modes.py``
(docs/learning-modes.md).

Learning is prequential (test, then train): each label's transaction is scored before the
label is learnt. Those scores are out of sample, like the validation folds of a batch
retrain, so the alert threshold is chosen on the latest ``threshold_labels`` of them with
the same cost model (`fraudops.modeling.evaluation.choose_threshold`); before the first
fraud the least-cost rule alerts on nothing.

The learner is one picklable object, river's running means and Adam's moments included, so
a process can save it and another carry on from the same state (``serving.online_shadow``
relies on that). ``position`` says how far along its feed of labels it is, so whoever
feeds it knows where to resume; ``learned`` counts labels and names the state.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fraudops.config import OnlineLearnerParams, Params
from fraudops.features.definitions import feature_columns

if TYPE_CHECKING:  # river and scikit-learn load with the first learner, not with this
    # module: serving imports it for the names below whatever its routing policy is
    from river import compose

#: The routing alias of the online learner: it may shadow, never answer; no registry alias
#: takes this name.
ONLINE_ALIAS = "online"
#: The model name of its rows in the prediction log, apart from the registry's model.
ONLINE_MODEL_NAME = "online-learner"
#: The threshold before any label: least cost with no fraud seen is to alert on nothing.
NO_ALERTS = 1.0


def _pipeline(params: OnlineLearnerParams) -> compose.Pipeline:
    from river import compose, linear_model, optim, preprocessing

    regression = linear_model.LogisticRegression(
        optimizer=optim.Adam(params.learning_rate), l2=params.l2
    )
    return compose.Pipeline(preprocessing.StandardScaler(), regression)


@dataclass
class OnlineLearner:
    """The learner's whole state: model, counts, feed position and prequential scores."""

    features: tuple[str, ...]
    params: OnlineLearnerParams
    cost_missed_fraud: float
    cost_false_alarm: float
    pipeline: compose.Pipeline
    learned: int = 0
    position: int = 0
    threshold: float = NO_ALERTS
    #: The latest ``threshold_labels`` prequential scores and their labels, oldest first.
    recent_scores: np.ndarray = field(default_factory=lambda: np.empty(0))
    recent_labels: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int8))

    @classmethod
    def new(cls, params: Params) -> OnlineLearner:
        """A learner that has seen nothing, on the features and costs of PARAMS."""
        online = params.learning.online
        return cls(
            features=tuple(feature_columns(params.features)),
            params=online,
            cost_missed_fraud=params.train.cost_missed_fraud,
            cost_false_alarm=params.train.cost_false_alarm,
            pipeline=_pipeline(online),
        )

    @property
    def version(self) -> str:
        """The state's name: how many labels it has learnt."""
        return str(self.learned)

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """The fraud probability of each row (columns in ``features`` order)."""
        if len(rows) == 0:
            return np.empty(0)
        proba = self.pipeline.predict_proba_many(self._frame(rows))
        scores: np.ndarray = proba[True].to_numpy(dtype=np.float64)
        return scores

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """Both classes' probabilities, as scikit-learn estimators give them to serving."""
        fraud = self.scores(rows)
        return np.column_stack([1.0 - fraud, fraud])

    def learn(
        self, rows: np.ndarray, labels: np.ndarray, position: int | None = None
    ) -> np.ndarray:
        """Score ROWS, then learn their LABELS; return the scores from before learning.

        POSITION, when given, is where the feed stands after these labels.
        """
        before = self.scores(rows)
        if len(rows):
            frauds = np.asarray(labels) == 1
            weights = pd.Series(np.where(frauds, self.params.positive_weight, 1.0))
            self.pipeline.learn_many(self._frame(rows), pd.Series(frauds), w=weights)
            keep = self.params.threshold_labels
            labels_now = frauds.astype(np.int8)
            self.recent_scores = np.concatenate([self.recent_scores, before])[-keep:]
            self.recent_labels = np.concatenate([self.recent_labels, labels_now])[-keep:]
            self.learned += len(rows)
            self.threshold = self._least_cost_threshold()
        if position is not None:
            self.position = position
        return before

    def _least_cost_threshold(self) -> float:
        from fraudops.modeling.evaluation import choose_threshold

        chosen = choose_threshold(
            self.recent_labels, self.recent_scores, self.cost_missed_fraud, self.cost_false_alarm
        )
        return min(chosen, NO_ALERTS)

    def _frame(self, rows: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(np.asarray(rows, dtype=np.float64), columns=list(self.features))

    def save(self, path: Path) -> None:
        """Write the state to PATH atomically: a reader sees the old state or the new one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "wb") as stream:
                pickle.dump(self, stream, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> OnlineLearner:
        """The state `save` wrote (a pickle: load only files this project wrote itself)."""
        with path.open("rb") as stream:
            learner = pickle.load(stream)
        if not isinstance(learner, cls):
            raise TypeError(f"{path} holds a {type(learner).__name__}, not an online learner")
        return learner
