"""The CP@100 ceilings of the model-quality benchmark: which frauds are visible, and the limits.

A terminal fraud is invisible when its amount is ordinary and no fraud of its terminal is
old enough (the label delay) and recent enough (the longest terminal window) to be used;
the visible ceiling ranks the visible frauds first and the invisible ones last.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import polars as pl
import pytest

from fraudops.config import FeatureParams
from fraudops.data.schema import (
    CUSTOMER_ID,
    RAW_SCHEMA,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
    TX_FRAUD_SCENARIO,
)
from fraudops.data.split import TimeSplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from fraud_ceiling import INVISIBLE, VISIBLE, ceilings, fraud_visibility

PARAMS = FeatureParams()  # delay 7 days, longest terminal window 30 days
TEST_DAY = dt.date(2018, 5, 8)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"2018-{text}")


# time, customer, terminal, amount, scenario code (1 amount, 2 terminal, 3 card); ids by time.
FRAUDS = [
    (at("04-01 12:00:00"), 10, 8, 300.0, 1),  # visible: its amount
    (at("05-01 12:00:00"), 11, 7, 50.0, 2),  # invisible: first fraud of terminal 7
    (at("05-08 11:00:00"), 12, 7, 230.0, 2),  # visible: amount over 220
    (at("05-08 11:59:59"), 13, 7, 50.0, 2),  # invisible: 05-01's label is 1 s too young
    (at("05-08 11:59:59"), 14, 8, 50.0, 2),  # visible: 04-01 is inside (t - 37 d, t - 7 d]
    (at("05-08 12:00:00"), 15, 7, 50.0, 2),  # visible: 05-01 is exactly t - 7 d
    (at("05-08 12:00:00"), 16, 8, 50.0, 2),  # invisible: 04-01 is exactly t - 37 d, out
    (at("05-08 13:00:00"), 17, 9, 250.0, 3),  # visible: a compromised card needs no label
]
#: 101 genuine cards on the test day, so invisible-last pushes two cards out of the top 100.
GENUINE = [(at("05-08 14:00:00"), 100 + i, 9, 20.0, 0) for i in range(101)]


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    rows = [(i, *row) for i, row in enumerate(FRAUDS + GENUINE)]
    columns = [TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT, TX_FRAUD_SCENARIO]
    frame = pl.DataFrame(rows, schema=columns, orient="row").with_columns(
        (pl.col(TX_FRAUD_SCENARIO) > 0).cast(pl.Int8).alias(TX_FRAUD)
    )
    return frame.select(pl.col(name).cast(dtype) for name, dtype in RAW_SCHEMA.items())


def test_visibility_follows_the_label_delay_and_the_longest_window(raw):
    flags = fraud_visibility(raw.reverse(), PARAMS)
    assert flags[TRANSACTION_ID].to_list() == list(range(raw.height))
    assert flags.filter(VISIBLE)[TRANSACTION_ID].to_list() == [0, 2, 4, 5, 7]
    assert flags.filter(INVISIBLE)[TRANSACTION_ID].to_list() == [1, 3, 6]


def test_the_ceilings_rank_all_frauds_or_only_the_visible_ones(raw):
    test = raw.filter(pl.col(TX_DATETIME).dt.date() == TEST_DAY)
    split = TimeSplit(raw.head(0), test, TEST_DAY, TEST_DAY, TEST_DAY, TEST_DAY)
    limits = ceilings(split, fraud_visibility(raw, PARAMS))
    # Six fraudulent cards that day, four of them with a visible fraud; k = 100.
    assert limits["all_frauds"] == pytest.approx(0.06)
    assert limits["visible_frauds"] == pytest.approx(0.04)
    assert limits["invisible_share"] == pytest.approx(2 / 6)


def test_visibility_must_cover_the_test_rows(raw):
    split = TimeSplit(raw.head(0), raw, TEST_DAY, TEST_DAY, TEST_DAY, TEST_DAY)
    with pytest.raises(ValueError, match="cover every test transaction"):
        ceilings(split, fraud_visibility(raw.head(5), PARAMS))
