"""The handbook's features as the benchmark computes them: exact rolling windows, exact delay.

A hand-computed example pins each window edge; the handbook's own pandas code
(Ch.3 ``BaselineFeatureTransformation``, copied below) must agree on a small simulation.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from fraudops.config import FeatureParams, SimulateParams
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
from fraudops.data.simulate import simulate
from fraudops.features.definitions import KEY_COLUMNS, feature_columns

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from handbook_baseline import handbook_features

PARAMS = FeatureParams()  # windows 1, 7, 30 days; delay 7 days; night through 06:59:59


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"2018-{text}")


# id, time, customer, terminal, amount, fraud; ids follow time, ties by id.
ROWS = [
    (0, at("06-12 12:00:00"), 2, 7, 10.00, 1),  # exactly t - 8 d: out of the 1-day window
    (1, at("06-12 12:00:01"), 3, 7, 20.00, 0),  # just inside t - 8 d
    (2, at("06-13 12:00:00"), 4, 7, 30.00, 1),  # exactly t - 7 d: old enough, in
    (3, at("06-13 12:00:01"), 5, 7, 40.00, 1),  # one second too young: never in
    (4, at("06-16 06:59:59"), 9, 9, 5.00, 0),  # Saturday, night
    (5, at("06-17 07:00:00"), 9, 9, 5.00, 0),  # Sunday, not night
    (6, at("06-19 12:00:00"), 1, 8, 10.00, 0),  # exactly t - 1 d: out of the 1-day window
    (7, at("06-19 12:00:01"), 1, 8, 20.00, 0),
    (8, at("06-20 12:00:00"), 1, 7, 30.00, 0),  # the transaction looked at (Wednesday)
    (9, at("06-20 12:00:00"), 1, 7, 40.00, 0),  # same second, later id
]


@pytest.fixture(scope="module")
def example() -> pl.DataFrame:
    columns = [TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT, TX_FRAUD]
    raw = pl.DataFrame(ROWS, schema=columns, orient="row").with_columns(
        pl.col(TX_FRAUD).alias(TX_FRAUD_SCENARIO)
    )
    raw = raw.select(pl.col(name).cast(dtype) for name, dtype in RAW_SCHEMA.items())
    return handbook_features(raw.reverse(), PARAMS)  # input order must not matter


def row(frame: pl.DataFrame, transaction_id: int) -> dict:
    return frame.filter(pl.col(TRANSACTION_ID) == transaction_id).row(0, named=True)


def test_columns_are_the_projects_in_its_order(example):
    assert example.columns == [*KEY_COLUMNS, *feature_columns(PARAMS)]
    assert example[TRANSACTION_ID].to_list() == list(range(10))


def test_a_customer_window_is_t_minus_w_exclusive_to_the_transaction_itself(example):
    looked_at = row(example, 8)
    # 1 day: id 7 and itself; id 6 at exactly t - 1 d is out; id 9 (same second, later) too.
    assert looked_at["customer_nb_tx_1d"] == 2
    assert looked_at["customer_avg_amount_1d"] == pytest.approx(25.0)
    assert looked_at["customer_nb_tx_7d"] == 3
    assert looked_at["customer_avg_amount_7d"] == pytest.approx(20.0)
    assert looked_at["customer_nb_tx_30d"] == 3
    later_twin = row(example, 9)
    assert later_twin["customer_nb_tx_1d"] == 3
    assert later_twin["customer_avg_amount_1d"] == pytest.approx(30.0)


def test_a_terminal_window_reads_only_labels_at_least_seven_days_old(example):
    looked_at = row(example, 8)
    # (t - 8 d, t - 7 d]: ids 1 and 2. Id 0 sits on the open edge, id 3 is 1 s too young.
    assert looked_at["terminal_nb_tx_1d"] == 2
    assert looked_at["terminal_risk_1d"] == 0.5
    # (t - 14 d, t - 7 d]: ids 0, 1, 2; the two transactions of day D never count.
    assert looked_at["terminal_nb_tx_7d"] == 3
    assert looked_at["terminal_risk_7d"] == pytest.approx(2 / 3)
    assert looked_at["terminal_nb_tx_30d"] == 3
    assert row(example, 9)["terminal_nb_tx_1d"] == 2


def test_an_empty_terminal_window_counts_zero_with_zero_risk(example):
    first = row(example, 0)
    assert (first["terminal_nb_tx_30d"], first["terminal_risk_30d"]) == (0, 0)


def test_weekend_and_night_flags(example):
    saturday_night, sunday_morning, wednesday_noon = (row(example, i) for i in (4, 5, 8))
    assert (saturday_night["tx_during_weekend"], saturday_night["tx_during_night"]) == (1, 1)
    assert (sunday_morning["tx_during_weekend"], sunday_morning["tx_during_night"]) == (1, 0)
    assert (wednesday_noon["tx_during_weekend"], wednesday_noon["tx_during_night"]) == (0, 0)


# --- the handbook's own code (Ch.3), stable sorts added so ties follow the ids --------------


def handbook_customer(tx: pd.DataFrame, windows: list[int]) -> pd.DataFrame:
    tx = tx.sort_values("TX_DATETIME", kind="stable")
    tx.index = tx.TX_DATETIME
    for w in windows:
        total = tx["TX_AMOUNT"].rolling(f"{w}d").sum()
        count = tx["TX_AMOUNT"].rolling(f"{w}d").count()
        tx[f"customer_nb_tx_{w}d"] = list(count)
        tx[f"customer_avg_amount_{w}d"] = list(total / count)
    tx.index = tx.TRANSACTION_ID
    return tx


def handbook_terminal(tx: pd.DataFrame, delay: int, windows: list[int]) -> pd.DataFrame:
    tx = tx.sort_values("TX_DATETIME", kind="stable")
    tx.index = tx.TX_DATETIME
    fraud_delay = tx["TX_FRAUD"].rolling(f"{delay}d").sum()
    count_delay = tx["TX_FRAUD"].rolling(f"{delay}d").count()
    for w in windows:
        fraud = tx["TX_FRAUD"].rolling(f"{delay + w}d").sum() - fraud_delay
        count = tx["TX_FRAUD"].rolling(f"{delay + w}d").count() - count_delay
        tx[f"terminal_nb_tx_{w}d"] = list(count)
        tx[f"terminal_risk_{w}d"] = list(fraud / count)
    tx.index = tx.TRANSACTION_ID
    return tx.fillna(0)


def test_the_handbooks_own_pandas_code_gives_the_same_values():
    raw = simulate(SimulateParams(customers=60, terminals=120, days=50, seed=5))
    tx = raw.to_pandas().rename(
        columns={
            TRANSACTION_ID: "TRANSACTION_ID",
            TX_DATETIME: "TX_DATETIME",
            TX_AMOUNT: "TX_AMOUNT",
            TX_FRAUD: "TX_FRAUD",
        }
    )
    tx["TX_FRAUD"] = tx["TX_FRAUD"].astype("float64")
    windows = list(PARAMS.customer_windows_days)
    customer = pd.concat(handbook_customer(part, windows) for _, part in tx.groupby(CUSTOMER_ID))
    terminal = pd.concat(
        handbook_terminal(part, PARAMS.label_delay_days, list(PARAMS.terminal_windows_days))
        for _, part in tx.groupby(TERMINAL_ID)
    )
    ours = handbook_features(raw, PARAMS).to_pandas().set_index(TRANSACTION_ID)
    for name in ours.columns:
        source = customer if name.startswith("customer_") else terminal
        if name.startswith(("customer_", "terminal_")):
            expected = source[name].sort_index().to_numpy()
            np.testing.assert_allclose(ours[name].to_numpy(), expected, rtol=1e-12, err_msg=name)
    assert (ours["terminal_nb_tx_1d"] > 0).mean() > 0.5  # the windows are not trivially empty
    assert (ours["terminal_risk_30d"] > 0).any()
