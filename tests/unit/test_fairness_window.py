"""A window's segment report from the customers' raw history, its gap alarm, and the
``regional_fraud`` scenario it is tested against."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fraudops.config import Params, SimulateParams
from fraudops.data.datasets import write_raw
from fraudops.data.drift_scenarios import REGIONAL_FRAUD_AREA, SCENARIO_REGIONAL_FRAUD
from fraudops.data.schema import (
    CUSTOMER_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
    TX_FRAUD_SCENARIO,
)
from fraudops.data.simulate import simulate
from fraudops.fairness.segment_report import segment_report
from fraudops.fairness.segments import customer_regions
from fraudops.fairness.window_segments import (
    SegmentsUnavailable,
    load_history,
    window_segment_report,
)
from fraudops.health.decision import segment_gaps

SIMULATED = SimulateParams(customers=400, terminals=800, days=60, seed=8)
PARAMS = Params(simulate=SimulateParams(customers=400, terminals=800, seed=8))
SINCE = dt.datetime(2018, 5, 1)


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    return simulate(SIMULATED)


def logged(rows: pl.DataFrame, alerts: np.ndarray) -> pd.DataFrame:
    """ROWS as a prediction-log window: every label in, the decisions ALERTS."""
    return pd.DataFrame(
        {
            TRANSACTION_ID: rows[TRANSACTION_ID].to_numpy(),
            "decision": alerts,
            "label": pd.array(rows[TX_FRAUD].to_numpy(), dtype="Int8"),
        }
    )


def test_a_window_is_reported_as_segment_report_reports_its_rows(raw):
    rows = raw.filter(pl.col(TX_DATETIME) >= SINCE)
    alerts = rows[TX_AMOUNT].to_numpy() > 150
    window = logged(rows, alerts)
    window.loc[0, "label"] = pd.NA  # unlabelled: left out
    stranger = window.iloc[[1]].assign(**{TRANSACTION_ID: -1})

    found = window_segment_report(pd.concat([window, stranger]), raw, PARAMS)

    expected = segment_report(raw, rows[1:], alerts[1:], PARAMS)
    assert (found.labelled, found.not_in_history) == (rows.height, 1)
    assert_frame_equal(found.report.table, expected.table)
    assert_frame_equal(found.report.gaps, expected.gaps)


def test_a_window_it_cannot_report_on_says_why(raw):
    rows = raw.filter(pl.col(TX_DATETIME) >= SINCE).head(50)
    window = logged(rows, np.zeros(rows.height, dtype=bool))
    with pytest.raises(SegmentsUnavailable, match="lacks the columns \\['decision'\\]"):
        window_segment_report(window.drop(columns="decision"), raw, PARAMS)
    with pytest.raises(SegmentsUnavailable, match="none of the window's 50 labelled"):
        window_segment_report(window, raw.head(0), PARAMS)


def test_history_is_raw_data_and_journal_each_transaction_once(raw, tmp_path: Path):
    with pytest.raises(SegmentsUnavailable, match="no raw data at"):
        load_history(tmp_path / "raw", tmp_path / "journal")
    write_raw(raw.filter(pl.col(TX_DATETIME) < SINCE + dt.timedelta(days=1)), tmp_path / "raw")
    with pytest.raises(SegmentsUnavailable, match="no traffic journal at"):
        load_history(tmp_path / "raw", tmp_path / "journal")
    write_raw(raw.filter(pl.col(TX_DATETIME) >= SINCE), tmp_path / "journal")

    history = load_history(tmp_path / "raw", tmp_path / "journal")

    assert_frame_equal(history.sort(TRANSACTION_ID), raw.sort(TRANSACTION_ID))


GAP = {"segment": "region", "gap": "equalized_odds_difference", "tolerance": 0.2}


def gap_rows(value: float, low: float, high: float) -> pl.DataFrame:
    flagged = low > GAP["tolerance"]
    return pl.DataFrame([GAP | {"value": value, "low": low, "high": high, "flagged": flagged}])


@pytest.mark.parametrize(
    ("window", "training", "fires"),
    [
        ((0.6, 0.5, 0.7), (0.3, 0.1, 0.45), True),  # flagged, wholly above training's
        ((0.6, 0.5, 0.7), (0.4, 0.25, 0.55), False),  # flagged, overlapping: noise
        ((0.3, 0.1, 0.5), (0.05, 0.0, 0.08), False),  # wider, but within tolerance
        ((0.6, 0.5, 0.7), None, True),  # training without the gap
        ((float("inf"), float("inf"), float("inf")), None, False),  # a ratio without a floor
    ],
)
def test_the_gap_alarm_fires_on_a_flagged_gap_clearly_wider_than_at_training(
    window, training, fires
):
    before = None if training is None else gap_rows(*training)
    gaps = segment_gaps(gap_rows(*window), before)
    assert gaps.alarm is fires, gaps.alarms
    assert gaps.gaps[0].training_value == (None if training is None else training[0])


def test_regional_fraud_is_none_plus_ordinary_looking_frauds_in_one_region():
    none = simulate(SIMULATED)
    regional = simulate(SIMULATED.model_copy(update={"scenario": "regional_fraud"}))
    changed = regional.filter(pl.col(TX_FRAUD_SCENARIO) == SCENARIO_REGIONAL_FRAUD)
    assert changed.height > 100
    same = none.join(regional, on=TRANSACTION_ID, suffix="_r")
    assert same.height == none.height == regional.height
    untouched = same.filter(pl.col(f"{TX_FRAUD_SCENARIO}_r") != SCENARIO_REGIONAL_FRAUD)
    assert (untouched[TX_FRAUD_SCENARIO] == untouched[f"{TX_FRAUD_SCENARIO}_r"]).all()
    assert (same[TX_AMOUNT] == same[f"{TX_AMOUNT}_r"]).all()  # frauds at ordinary amounts
    regions = customer_regions(SIMULATED, grid=2).join(changed, on=CUSTOMER_ID)
    assert set(regions["region"]) == {"x0y0"}
    assert REGIONAL_FRAUD_AREA == (50.0, 50.0)
