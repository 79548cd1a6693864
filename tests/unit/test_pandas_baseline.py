"""The pandas baseline of the features benchmark computes our feature definitions.

A speed-up is only a speed-up over the same result: when a definition changes, this fails
before the benchmark does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fraudops.config import FeatureParams, SimulateParams
from fraudops.data.simulate import simulate
from fraudops.features.definitions import KEY_COLUMNS, build_features

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from pandas_baseline import pandas_features

pytestmark = pytest.mark.data


@pytest.mark.parametrize("label_delay_days", [1, 7])
def test_the_baseline_equals_build_features_to_the_last_bit(label_delay_days: int) -> None:
    raw = simulate(SimulateParams(customers=120, terminals=240, days=45, seed=3))
    params = FeatureParams(label_delay_days=label_delay_days)
    ours = build_features(raw, params).sort("transaction_id")
    baseline = pl.from_pandas(pandas_features(raw.to_pandas(), params))
    assert_frame_equal(
        ours.select(baseline.columns), baseline, check_exact=True, check_dtypes=False
    )
    assert set(KEY_COLUMNS) <= set(baseline.columns)
