"""A monitoring run where a numeric feature has one value, through the real Evidently and
NannyML code: its output stays clean and the run says how that feature was judged.

Evidently's drifted-columns metric correlates every pair of numeric features for its HTML
table; a constant column's correlation is 0 / 0 and numpy printed "invalid value
encountered in divide" on every such run (see ``monitoring.drift``).
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudops.config import Params
from fraudops.data.schema import CUSTOMER_ID, TX_DATETIME, TX_FRAUD
from fraudops.features.definitions import TX_DURING_NIGHT, TX_DURING_WEEKEND, feature_columns
from fraudops.health.decision import LABEL
from fraudops.modeling.steps import PERIOD, SCORE
from monitoring.analysis import analyse_window
from monitoring.reports import write_reports

PARAMS = Params()
FEATURES = feature_columns(PARAMS.features)
STUCK = "terminal_risk_7d"
FRAUD_RATE = 0.1


def _rows(count: int, seed: int, start: dt.datetime) -> dict[str, np.ndarray]:
    """Features with spread, a label, and a score that follows the label."""
    rng = np.random.default_rng(seed)
    label = (rng.random(count) < FRAUD_RATE).astype(int)
    columns = {
        name: rng.integers(0, 2, count).astype(float)
        if name in (TX_DURING_WEEKEND, TX_DURING_NIGHT)
        else rng.gamma(2.0, 10.0, count)
        for name in FEATURES
    }
    return columns | {
        SCORE: np.clip(0.6 * label + rng.normal(0.2, 0.15, count), 0, 1),
        "label": label,
        TX_DATETIME: np.array([start + dt.timedelta(minutes=i) for i in range(count)]),
        "card": rng.integers(0, 500, count),
    }


def reference(count: int = 4000) -> pd.DataFrame:
    """Shaped like the sample the training run logs: half training, half test period."""
    rows = _rows(count, seed=1, start=dt.datetime(2018, 5, 1))
    return (
        pd.DataFrame(rows)
        .rename(columns={"label": TX_FRAUD, "card": CUSTOMER_ID})
        .assign(**{PERIOD: np.where(np.arange(count) < count // 2, "train", "test")})
    )


def window(count: int = 3000) -> pd.DataFrame:
    """Shaped like ``read_predictions`` output, every label already in."""
    rows = _rows(count, seed=2, start=dt.datetime(2018, 6, 1))
    return pd.DataFrame(rows).rename(columns={"label": LABEL, "card": "customer_hash"})


@pytest.mark.parametrize("where", ["window", "reference"])
def test_a_constant_feature_is_judged_and_noted_without_a_numpy_warning(
    where: str, tmp_path: Path
) -> None:
    ref, current = reference(), window()
    (current if where == "window" else ref)[STUCK] = 0.0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = analyse_window(
            ref, current, threshold=0.5, params=PARAMS, window_id="w", timestamp=dt.datetime.now()
        )
        folder = write_reports(result, tmp_path)

    numpy_warnings = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not numpy_warnings
    decision = result.decision
    assert decision.quality is not None and decision.estimate is not None  # the whole path ran
    assert sorted(path.name for path in folder.iterdir()) == [
        "decision.json",
        "drift.html",
        "drift.json",
        "quality.html",
        "quality.json",
    ]
    [note] = [note for note in decision.notes if note.startswith(STUCK)]
    assert f"constant in the {where} (0)" in note
    # A feature that collapsed to one value, or left the one it had, has drifted.
    [stuck] = [column for column in decision.data_drift.features if column.column == STUCK]
    assert np.isfinite(stuck.score) and stuck.drifted
    others = [column for column in decision.data_drift.features if column.column != STUCK]
    assert not any(column.drifted for column in others), "same generator, no drift"
