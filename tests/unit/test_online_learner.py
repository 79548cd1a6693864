"""The online learner: prequential, resumable from its saved state, and absent until routed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from fraudops.config import LearningParams, OnlineLearnerParams, Params
from fraudops.modeling.evaluation import choose_threshold
from fraudops.modeling.online import NO_ALERTS, OnlineLearner

pytestmark = pytest.mark.model

PROJECT = Path(__file__).resolve().parents[2]
PARAMS = Params(learning=LearningParams(online=OnlineLearnerParams(threshold_labels=500)))


def _stream(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the learner's width; fraud is rare and follows two of the inputs."""
    rng = np.random.default_rng(seed)
    width = len(OnlineLearner.new(PARAMS).features)
    x = rng.normal(size=(rows, width)) * 10 + 50
    y = (x[:, 0] + x[:, 3] + rng.normal(scale=3, size=rows) > 125).astype(int)
    return x, y


def _feed(learner: OnlineLearner, x: np.ndarray, y: np.ndarray, step: int = 100) -> None:
    for first in range(0, len(x), step):
        learner.learn(x[first : first + step], y[first : first + step], position=first + step)


def test_before_any_label_it_tells_nothing_apart_and_alerts_on_nothing() -> None:
    learner = OnlineLearner.new(PARAMS)
    x, _ = _stream(0, 5)

    np.testing.assert_array_equal(learner.scores(x), np.full(5, 0.5))
    assert learner.threshold == NO_ALERTS and learner.version == "0"


def test_each_label_is_scored_before_it_is_learnt_and_the_threshold_follows_those_scores() -> None:
    learner = OnlineLearner.new(PARAMS)
    x, y = _stream(1, 2000)
    _feed(learner, x[:1000], y[:1000])
    expected = learner.scores(x[1000:1100])

    before = learner.learn(x[1000:1100], y[1000:1100], position=1100)

    np.testing.assert_array_equal(before, expected)
    assert not np.array_equal(learner.scores(x[1000:1100]), before)
    assert learner.learned == 1100 and learner.position == 1100 and learner.version == "1100"
    # The threshold is the least-cost one over the latest 500 prequential scores.
    recent_scores, recent_labels = learner.recent_scores, learner.recent_labels
    assert len(recent_scores) == 500
    np.testing.assert_array_equal(recent_scores[-100:], before)
    assert learner.threshold == min(
        choose_threshold(recent_labels, recent_scores, 100.0, 5.0), NO_ALERTS
    )


def test_it_learns_to_rank_frauds_first() -> None:
    learner = OnlineLearner.new(PARAMS)
    x, y = _stream(2, 6000)
    fresh_x, fresh_y = _stream(3, 3000)
    untrained = average_precision_score(fresh_y, learner.scores(fresh_x))

    _feed(learner, x, y)

    trained = average_precision_score(fresh_y, learner.scores(fresh_x))
    assert trained > max(0.8, 2 * untrained)
    assert 0 < learner.threshold < NO_ALERTS


def test_a_saved_state_carries_on_exactly_as_the_learner_would_have(tmp_path: Path) -> None:
    x, y = _stream(4, 3000)
    straight = OnlineLearner.new(PARAMS)
    _feed(straight, x, y)

    first = OnlineLearner.new(PARAMS)
    _feed(first, x[:1500], y[:1500])
    first.save(tmp_path / "state.pkl")
    resumed = OnlineLearner.load(tmp_path / "state.pkl")
    _feed(resumed, x[1500:], y[1500:])

    fresh, _ = _stream(5, 500)
    np.testing.assert_array_equal(resumed.scores(fresh), straight.scores(fresh))
    assert resumed.threshold == straight.threshold
    assert resumed.learned == straight.learned == 3000


def test_a_file_that_is_not_a_learner_state_is_refused(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "state.pkl"
    path.write_bytes(pickle.dumps({"not": "a learner"}))

    with pytest.raises(TypeError, match="not an online learner"):
        OnlineLearner.load(path)


def test_serving_loads_neither_river_nor_scikit_learn_until_a_policy_names_the_learner() -> None:
    code = (
        "import sys, serving.app, serving.runtime, serving.online_shadow; "
        "print(sorted(m for m in ('river', 'sklearn') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
