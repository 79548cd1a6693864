"""The model-quality benchmark's protocol: the handbook's test weeks, never seen by selection."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import polars as pl
import pytest

from fraudops.config import SimulateParams, TrainParams
from fraudops.data.simulate import simulate
from fraudops.data.split import HANDBOOK_TEST_START, validation_splits

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_model_quality import check_selection_is_blind, prequential_test_weeks

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    return simulate(SimulateParams(customers=100, terminals=200, days=183, seed=4))


def test_the_test_weeks_are_the_handbooks_and_selection_never_reaches_them(raw):
    params = TrainParams(test_start=HANDBOOK_TEST_START)
    weeks = prequential_test_weeks(raw, params)
    assert [week.test_start for week in weeks] == [
        dt.date(2018, 8, 8) + dt.timedelta(days=7 * i) for i in range(4)
    ]
    assert [week.train_start for week in weeks] == [
        dt.date(2018, 7, 25) + dt.timedelta(days=7 * i) for i in range(4)
    ]
    validation = validation_splits(raw, params)
    assert max(fold.test_end for fold in validation) == dt.date(2018, 7, 31)
    check_selection_is_blind(validation, weeks)


def test_a_selection_that_sees_a_test_week_is_refused(raw):
    weeks = prequential_test_weeks(raw, TrainParams(test_start=HANDBOOK_TEST_START))
    later = TrainParams(test_start=HANDBOOK_TEST_START + dt.timedelta(days=14))
    with pytest.raises(RuntimeError, match="on or after test day 2018-08-08"):
        check_selection_is_blind(validation_splits(raw, later), weeks)
