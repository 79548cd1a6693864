"""Feature definitions: hand-computed window edges, and online values equal to offline ones.

Every hand-computed case runs through both paths: `build_features` over the frame, and a
one-by-one replay through the online functions with in-memory day buckets.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections import defaultdict

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

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
from fraudops.features.definitions import (
    CustomerBucket,
    TerminalBucket,
    amount_to_cents,
    build_features,
    customer_bucket_days,
    day_number,
    feature_columns,
    label_known_day,
    prune,
    terminal_bucket_days,
    transaction_features,
)

pytestmark = pytest.mark.data

DEFAULT = FeatureParams()
# A Wednesday, far enough from the weekend edges used below.
D = dt.datetime(2018, 6, 20)


def raw_frame(rows: list[tuple[dt.datetime, int, int, float, int]]) -> pl.DataFrame:
    """Raw transactions from (datetime, customer, terminal, amount, fraud), ids in list order."""
    datetimes, customers, terminals, amounts, frauds = zip(*rows, strict=True)
    return pl.DataFrame(
        {
            TRANSACTION_ID: range(len(rows)),
            TX_DATETIME: datetimes,
            CUSTOMER_ID: customers,
            TERMINAL_ID: terminals,
            TX_AMOUNT: amounts,
            TX_FRAUD: frauds,
            TX_FRAUD_SCENARIO: frauds,
        },
        schema=RAW_SCHEMA,
    )


def replay_online(raw: pl.DataFrame, params: FeatureParams, labels_at_once: bool) -> pl.DataFrame:
    """Serve each transaction in id order from day buckets, updating them as a store would.

    Fraud labels reach the terminal buckets on the day they become known, or, with
    ``labels_at_once``, right after the transaction (early labels must not change features).
    """
    customers: dict[int, dict[int, CustomerBucket]] = defaultdict(dict)
    terminals: dict[int, dict[int, TerminalBucket]] = defaultdict(dict)
    pending: list[tuple[int, int, int]] = []  # (day the label is known, terminal, tx day)
    served = []
    for tx in raw.sort(TRANSACTION_ID).iter_rows(named=True):
        day = day_number(tx[TX_DATETIME])
        while pending and pending[0][0] <= day:
            _, terminal, tx_day = heapq.heappop(pending)
            terminals[terminal][tx_day] = terminals[terminal][tx_day].with_fraud()
        customer_buckets = prune(customers[tx[CUSTOMER_ID]], customer_bucket_days(day, params))
        terminal_buckets = prune(terminals[tx[TERMINAL_ID]], terminal_bucket_days(day, params))
        served.append(
            transaction_features(
                tx[TX_DATETIME], tx[TX_AMOUNT], customer_buckets, terminal_buckets, params
            )
        )
        cents = amount_to_cents(tx[TX_AMOUNT])
        customer_buckets[day] = customer_buckets.get(day, CustomerBucket()).with_transaction(cents)
        terminal_buckets[day] = terminal_buckets.get(day, TerminalBucket()).with_transaction()
        customers[tx[CUSTOMER_ID]], terminals[tx[TERMINAL_ID]] = customer_buckets, terminal_buckets
        if tx[TX_FRAUD]:
            known = day if labels_at_once else label_known_day(day, params)
            heapq.heappush(pending, (known, tx[TERMINAL_ID], day))
    return pl.DataFrame(served, schema=dict.fromkeys(feature_columns(params), pl.Float64))


def features_both_ways(raw: pl.DataFrame, params: FeatureParams = DEFAULT) -> pl.DataFrame:
    """Offline features, after checking that serving computes exactly the same values."""
    offline = build_features(raw, params)
    for labels_at_once in (False, True):
        online = replay_online(raw, params, labels_at_once)
        assert_frame_equal(offline.select(feature_columns(params)), online, check_exact=True)
    return offline


def feature_row(raw: pl.DataFrame, transaction_id: int) -> dict[str, float]:
    features = features_both_ways(raw)
    return features.filter(pl.col(TRANSACTION_ID) == transaction_id).row(0, named=True)


def days(n: int) -> dt.timedelta:
    return dt.timedelta(days=n)


# --- names and shape --------------------------------------------------------------------------


def test_feature_columns_keep_the_model_input_order() -> None:
    assert feature_columns(DEFAULT) == [
        "tx_amount",
        "tx_during_weekend",
        "tx_during_night",
        "customer_nb_tx_1d",
        "customer_avg_amount_1d",
        "customer_nb_tx_7d",
        "customer_avg_amount_7d",
        "customer_nb_tx_30d",
        "customer_avg_amount_30d",
        "terminal_nb_tx_1d",
        "terminal_risk_1d",
        "terminal_nb_tx_7d",
        "terminal_risk_7d",
        "terminal_nb_tx_30d",
        "terminal_risk_30d",
    ]


def test_output_is_float_features_after_keys_sorted_by_transaction_id() -> None:
    raw = raw_frame([(D + dt.timedelta(hours=h), 1, 2, 10.0, 0) for h in range(3)])
    shuffled = raw.reverse().with_columns(day=pl.col(TX_DATETIME).dt.date())
    features = build_features(shuffled, DEFAULT)
    assert features.columns == [
        TRANSACTION_ID,
        TX_DATETIME,
        CUSTOMER_ID,
        TERMINAL_ID,
        TX_FRAUD,
        *feature_columns(DEFAULT),
    ]
    assert features[TRANSACTION_ID].to_list() == [0, 1, 2]
    assert all(features.schema[c] == pl.Float64 for c in feature_columns(DEFAULT))
    assert_frame_equal(features, build_features(raw, DEFAULT))


def test_no_transactions_give_an_empty_frame() -> None:
    features = build_features(pl.DataFrame(schema=RAW_SCHEMA), DEFAULT)
    assert features.height == 0
    assert features.columns[-1] == "terminal_risk_30d"


# --- customer windows -------------------------------------------------------------------------


def test_customer_window_edges() -> None:
    raw = raw_frame(
        [
            (D - days(30) + dt.timedelta(hours=12), 1, 9, 1000.0, 0),  # D-30: outside 30d
            (D - days(7) + dt.timedelta(hours=23, minutes=59, seconds=59), 1, 9, 100.0, 0),
            (D - days(6), 1, 9, 20.0, 0),  # D-6 00:00:00: first day of 7d
            (D - dt.timedelta(seconds=1), 1, 9, 7.77, 0),  # D-1 23:59:59: last day before 1d
            (D + dt.timedelta(hours=10), 1, 9, 5.25, 0),  # id 4: the transaction looked at
            (D + dt.timedelta(hours=10), 1, 9, 300.0, 0),  # same second, later id
            (D + dt.timedelta(hours=12), 1, 9, 400.0, 0),  # later the same day
            (D + dt.timedelta(hours=10), 2, 9, 50.0, 0),  # another customer
        ]
    )
    row = feature_row(raw, 4)
    assert row["customer_nb_tx_1d"] == 1.0
    assert row["customer_avg_amount_1d"] == 5.25
    assert row["customer_nb_tx_7d"] == 3.0  # D-6, D-1 and itself; D-7 is out
    assert row["customer_avg_amount_7d"] == (2000 + 777 + 525) / 300
    assert row["customer_nb_tx_30d"] == 4.0  # D-29 … D: adds D-7; D-30 is out
    assert row["customer_avg_amount_30d"] == (10000 + 2000 + 777 + 525) / 400


def test_same_day_transactions_count_up_to_the_current_one() -> None:
    raw = raw_frame(
        [
            (D + dt.timedelta(hours=10), 1, 9, 10.0, 0),
            (D + dt.timedelta(hours=10), 1, 9, 20.0, 0),  # a tie in time: id order decides
            (D + dt.timedelta(hours=23, minutes=59, seconds=59), 1, 9, 30.0, 0),
        ]
    )
    features = features_both_ways(raw)
    assert features["customer_nb_tx_1d"].to_list() == [1.0, 2.0, 3.0]
    assert features["customer_avg_amount_1d"].to_list() == [10.0, 15.0, 20.0]


def test_customer_average_is_the_exact_mean_of_the_cents() -> None:
    raw = raw_frame([(D + dt.timedelta(hours=h), 1, 9, 0.1, 0) for h in range(3)])
    # 0.1 + 0.1 + 0.1 is 0.30000000000000004 in floats; 30 cents / 3 is exactly 0.1.
    assert features_both_ways(raw)["customer_avg_amount_1d"].to_list() == [0.1, 0.1, 0.1]


# --- terminal windows -------------------------------------------------------------------------


def test_terminal_window_edges_follow_the_label_delay() -> None:
    delay = DEFAULT.label_delay_days  # 7
    raw = raw_frame(
        [
            (D - days(delay + 30) + dt.timedelta(hours=12), 5, 1, 10.0, 1),  # D-37: out of 30d
            (D - days(delay + 29) + dt.timedelta(hours=12), 5, 1, 10.0, 1),  # D-36: first of 30d
            (D - days(delay + 7) + dt.timedelta(hours=12), 5, 1, 10.0, 1),  # D-14: out of 7d
            (D - days(delay + 6), 5, 1, 10.0, 0),  # D-13 00:00:00: first day of 7d
            (D - days(delay - 1) - dt.timedelta(seconds=1), 5, 1, 10.0, 1),  # D-7 23:59:59: 1d
            (D - days(delay - 1), 5, 1, 10.0, 1),  # D-6: its label is not known yet on day D
            (D - dt.timedelta(hours=1), 5, 1, 10.0, 0),  # D-1
            (D + dt.timedelta(hours=1), 5, 1, 10.0, 1),  # earlier the same day
            (D + dt.timedelta(hours=9), 6, 1, 10.0, 0),  # id 8: the transaction looked at
            (D + dt.timedelta(hours=9), 6, 2, 10.0, 0),  # another terminal
        ]
    )
    row = feature_row(raw, 8)
    assert (row["terminal_nb_tx_1d"], row["terminal_risk_1d"]) == (1.0, 1.0)
    assert (row["terminal_nb_tx_7d"], row["terminal_risk_7d"]) == (2.0, 0.5)
    assert (row["terminal_nb_tx_30d"], row["terminal_risk_30d"]) == (4.0, 0.75)


def test_terminal_risk_is_zero_without_matured_history() -> None:
    raw = raw_frame(
        [
            (D - days(3), 1, 7, 10.0, 1),  # history, but its label is not known on day D
            (D, 2, 7, 20.0, 1),
        ]
    )
    features = features_both_ways(raw)
    for w in DEFAULT.terminal_windows_days:
        assert features[f"terminal_nb_tx_{w}d"].to_list() == [0.0, 0.0]
        assert features[f"terminal_risk_{w}d"].to_list() == [0.0, 0.0]


def test_with_a_one_day_delay_the_previous_day_counts() -> None:
    params = FeatureParams(terminal_windows_days=(1,), label_delay_days=1)
    raw = raw_frame([(D - dt.timedelta(seconds=1), 1, 7, 10.0, 1), (D, 2, 7, 20.0, 0)])
    features = features_both_ways(raw, params)
    assert features["terminal_nb_tx_1d"].to_list() == [0.0, 1.0]
    assert features["terminal_risk_1d"].to_list() == [0.0, 1.0]


# --- calendar flags ---------------------------------------------------------------------------


def test_weekend_and_night_edges() -> None:
    saturday = dt.datetime(2018, 6, 23)
    times = [
        saturday - dt.timedelta(seconds=1),  # Friday 23:59:59
        saturday,  # Saturday 00:00:00
        saturday + dt.timedelta(hours=6, minutes=59, seconds=59),
        saturday + dt.timedelta(hours=7),
        saturday + days(2) - dt.timedelta(seconds=1),  # Sunday 23:59:59
        saturday + days(2),  # Monday 00:00:00
    ]
    features = features_both_ways(raw_frame([(t, 1, 1, 1.0, 0) for t in times]))
    assert features["tx_during_weekend"].to_list() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert features["tx_during_night"].to_list() == [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]


def test_night_ends_after_the_configured_hour() -> None:
    params = FeatureParams(night_last_hour=3)
    night_end = D + dt.timedelta(hours=4)
    raw = raw_frame(
        [(night_end - dt.timedelta(seconds=1), 1, 1, 1.0, 0), (night_end, 1, 1, 1.0, 0)]
    )
    assert features_both_ways(raw, params)["tx_during_night"].to_list() == [1.0, 0.0]


# --- online helpers ---------------------------------------------------------------------------


def test_bucket_days_cover_exactly_the_windows() -> None:
    day = 100
    assert customer_bucket_days(day, DEFAULT) == range(71, 101)  # D-29 … D
    assert terminal_bucket_days(day, DEFAULT) == range(64, 94)  # D-36 … D-7
    buckets = {63: TerminalBucket(1, 0), 64: TerminalBucket(2, 1), 95: TerminalBucket(3, 0)}
    assert prune(buckets, terminal_bucket_days(day, DEFAULT)) == {
        64: TerminalBucket(2, 1),
        95: TerminalBucket(3, 0),
    }


def test_timezone_aware_times_are_read_in_utc() -> None:
    local = dt.datetime(2018, 6, 24, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    utc = dt.datetime(2018, 6, 23, 23, 30)  # a Saturday, not at night
    assert day_number(local) == day_number(utc) == (utc.date() - dt.date(1970, 1, 1)).days
    served = transaction_features(local, 12.5, {}, {}, DEFAULT)
    assert served == transaction_features(utc, 12.5, {}, {}, DEFAULT)
    assert (served["tx_during_weekend"], served["tx_during_night"]) == (1.0, 0.0)
    assert list(served) == feature_columns(DEFAULT)


# --- parity on a random stream ----------------------------------------------------------------


def random_stream(seed: int, size: int = 3000, nb_days: int = 80) -> pl.DataFrame:
    """Few customers and terminals (long histories), same-second ties, and empty days."""
    rng = np.random.default_rng(seed)
    active_days = np.setdiff1d(np.arange(nb_days), np.arange(30, 36))  # a week with no traffic
    seconds = rng.choice(active_days, size) * 86_400 + rng.integers(0, 86_400, size)
    seconds[: size // 10] = seconds[size // 10 : 2 * (size // 10)]  # exact ties in time
    customers = rng.integers(0, 30, size)
    customers[: size // 10] = customers[size // 10 : 2 * (size // 10)]  # same customer too
    order = np.argsort(seconds, kind="stable")
    start = np.datetime64("2018-04-01T00:00:00", "us")
    return pl.DataFrame(
        {
            TRANSACTION_ID: np.arange(size),
            TX_DATETIME: start + seconds[order].astype("timedelta64[s]"),
            CUSTOMER_ID: customers[order],
            TERMINAL_ID: rng.integers(0, 20, size),
            TX_AMOUNT: rng.integers(1, 50_000, size) / 100,
            TX_FRAUD: (rng.random(size) < 0.15).astype(np.int8),
            TX_FRAUD_SCENARIO: np.zeros(size, dtype=np.int8),
        },
        schema=RAW_SCHEMA,
    )


@pytest.mark.parametrize(
    "params",
    [
        DEFAULT,
        FeatureParams(
            customer_windows_days=(2, 5),
            terminal_windows_days=(3, 14),
            label_delay_days=1,
            night_last_hour=3,
        ),
    ],
    ids=["default", "short-windows-one-day-delay"],
)
def test_served_features_equal_offline_features_on_a_random_stream(params: FeatureParams) -> None:
    raw = random_stream(seed=7)
    features = features_both_ways(raw, params)
    # The stream exercises what the windows must get right, so the equality means something.
    columns = feature_columns(params)
    assert features[columns[-1]].max() > 0  # a terminal risk
    assert (features[columns[3]] > 1).sum() > 100  # same-day repeats of a customer
