"""The online learner as a shadow model: scored like any shadow, taught from the label log.

When the routing policy's shadow is the reserved alias ``online``, each server process holds
`fraudops.modeling.online.OnlineLearner` as a `LoadedModel` under that alias: the router
samples requests for it, the shadow scorer scores them off the response path and logs its
rows like any shadow model's (``model_alias`` ``online``, ``model_version`` the number of
labels it had learnt). A policy without it costs nothing: river and scikit-learn load with
the first learner, when a policy names it, in a worker thread.

Several worker processes must not grow several learners, each from the labels it happened
to receive: they would drift apart silently and log different models under one name. So
there is one learner state, a file under ``FRAUDOPS_HOME/online-learner``, and one feed,
the label log:

* a label reaches the learner through the log, which every worker writes, in the log's
  order (label id), whichever worker's ``POST /v1/feedback`` brought it;
* once a second each worker tries the state's lock (``flock``, never waiting); the holder
  loads the newest state, learns the next whole steps of ``learning.online.snapshot_labels``
  labels, saves the state atomically and lets go. The state records its position in the
  log, so each label is learnt once whoever learns it, and the state is a function of the
  log: a fresh learner replays the log from its start;
* every worker serves the newest saved state; a step is a new version, picked up within
  a second, and each shadow row names the version that scored it.

Chosen over a learner process of its own (one more service to run and watch, and a hop on
the shadow path) and over learning in a flow (labels would wait for a run, not a second).

What it learns from is guarded: the features are those serving logged when it scored the
transaction, never anything sent with the label; only a transaction's first label counts,
so repeating or flipping labels cannot make it learn one transaction many times; and a
label is read once ``SETTLE_S`` old, since log ids are not commit order across workers and
a label committed late behind a newer one would otherwise be skipped.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from sqlalchemy import Engine, and_, exists, select

from fraudops.config import Params, Settings, load_params
from fraudops.experiments.routing import RoutingConfig
from fraudops.locks import exclusive
from fraudops.logs.tables import labels, predictions
from fraudops.modeling.online import ONLINE_ALIAS, ONLINE_MODEL_NAME, OnlineLearner
from serving.loaded_model import EstimatorSource, LoadedModel

if TYPE_CHECKING:
    from fraudops.modeling.steps import NativeModel

logger = logging.getLogger(__name__)

STATE_FOLDER = "online-learner"
#: How old a label must be before it is read (see the module docstring).
SETTLE_S = 2.0
#: The most learning steps one sync takes, so catching up on a long log stays in short turns.
MAX_STEPS_PER_SYNC = 10


def shadows_online(config: RoutingConfig) -> bool:
    """Whether CONFIG shadows the online learner (it may only ever shadow, never answer)."""
    return (
        config.shadow is not None
        and config.shadow.alias == ONLINE_ALIAS
        and ONLINE_ALIAS not in config.arms
    )


class OnlineShadow:
    """This process's view of the shared learner: the model it serves and how it follows."""

    def __init__(self, folder: Path, engine: Engine, params: Params) -> None:
        self._state = folder / "state.pkl"
        self._lock = folder / "lock"
        self._engine = engine
        self._params = params
        self._stamp: int | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.model = _as_model(self._read())
        self._stamp = _mtime(self._state)

    @classmethod
    def open(cls, settings: Settings, engine: Engine) -> OnlineShadow:
        """The learner under SETTINGS' home, with the parameters serving reads."""
        return cls(settings.home / STATE_FOLDER, engine, load_params(settings.params_path))

    def sync(self) -> bool:
        """Learn the log's new labels if this process gets the lock, then serve the newest
        saved state; True when the served model changed."""
        with exclusive(self._lock) as held:
            if held:
                learner = self._read()
                if learn_new_labels(learner, self._engine, self._params):
                    learner.save(self._state)
        stamp = _mtime(self._state)
        if stamp is None or stamp == self._stamp:
            return False
        self.model = _as_model(self._read())
        self._stamp = stamp
        logger.info("online learner: serving version %s", self.model.version)
        return True

    def _read(self) -> OnlineLearner:
        if self._state.exists():
            return OnlineLearner.load(self._state)
        return OnlineLearner.new(self._params)


def learn_new_labels(learner: OnlineLearner, engine: Engine, params: Params) -> bool:
    """Teach LEARNER the next whole steps of labels after its position; False: none yet.

    A label whose logged row lacks an input the learner reads (a log outlives feature sets)
    is passed over: it counts towards its step, so it can never hold the learner up.
    """
    step = params.learning.online.snapshot_labels
    settled = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=SETTLE_S)
    found = first_labels(engine, learner.position, settled, step * MAX_STEPS_PER_SYNC)
    steps = len(found) // step
    for first in range(0, steps * step, step):
        chunk = found[first : first + step]
        complete = [
            (label, [features[name] for name in learner.features])
            for _, label, features in chunk
            if all(name in features for name in learner.features)
        ]
        rows = np.array([row for _, row in complete], dtype=np.float64).reshape(
            -1, len(learner.features)
        )
        truth = np.array([label for label, _ in complete], dtype=np.int8)
        learner.learn(rows, truth, position=chunk[-1][0])
    return steps > 0


def first_labels(
    engine: Engine, after: int, settled: dt.datetime, limit: int
) -> list[tuple[int, int, dict[str, Any]]]:
    """Up to LIMIT labels after label id AFTER, received by SETTLED, each the first of its
    transaction, with the features serving logged when it scored it; in label-id order."""
    earlier = labels.alias("earlier")
    query = (
        select(labels.c.id, labels.c.label, predictions.c.features)
        .join(
            predictions,
            and_(
                predictions.c.transaction_id == labels.c.transaction_id,
                predictions.c.is_shadow.is_(False),
            ),
        )
        .where(
            labels.c.id > after,
            labels.c.received_at <= settled,
            ~exists().where(
                earlier.c.transaction_id == labels.c.transaction_id, earlier.c.id < labels.c.id
            ),
        )
        .order_by(labels.c.id, predictions.c.id)
        .limit(limit)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    found: dict[int, tuple[int, int, dict[str, Any]]] = {}
    for id_, label, features in rows:  # a transaction scored twice: its first served row
        found.setdefault(id_, (id_, int(label), dict(features)))
    return list(found.values())


def _as_model(learner: OnlineLearner) -> LoadedModel:
    """The learner as serving's models are: scored by ``predict_proba``, as scikit-learn's."""
    return LoadedModel(
        name=ONLINE_MODEL_NAME,
        version=learner.version,
        alias=ONLINE_ALIAS,
        run_id=None,
        family="online",
        threshold=learner.threshold,
        feature_names=learner.features,
        source=EstimatorSource.of(cast("NativeModel", learner)),
        flat_walk=False,
    )


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None
