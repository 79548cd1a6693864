"""Feature definitions: hand-computed window edges, and online values equal to offline ones.

Every hand-computed case runs through both paths: `build_features` over the frame, and a
one-by-one replay through the online functions with in-memory buckets (customers per day,
terminals per label tick).
"""

from __future__ import annotations

import datetime as dt
import heapq
import sys
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
    prune,
    terminal_bucket_key,
    terminal_bucket_ticks,
    transaction_features,
)
from fraudops.features.label_timing import LabelTiming, label_timing

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
    """Serve each transaction in id order from buckets, updating them as a store would.

    Fraud labels reach the terminal buckets at the tick they become usable, or, with
    ``labels_at_once``, right after the transaction (early labels must not change features).
    """
    timing = label_timing(params)
    customers: dict[int, dict[int, CustomerBucket]] = defaultdict(dict)
    terminals: dict[int, dict[int, TerminalBucket]] = defaultdict(dict)
    pending: list[tuple[int, int, int]] = []  # (tick the label is usable, terminal, bucket)
    served = []
    for tx in raw.sort(TRANSACTION_ID).iter_rows(named=True):
        day, tick = day_number(tx[TX_DATETIME]), timing.tick(tx[TX_DATETIME])
        while pending and pending[0][0] <= tick:
            _, terminal, key = heapq.heappop(pending)
            terminals[terminal][key] = terminals[terminal][key].with_fraud()
        customer_buckets = prune(customers[tx[CUSTOMER_ID]], customer_bucket_days(day, params))
        terminal_buckets = prune(terminals[tx[TERMINAL_ID]], terminal_bucket_ticks(tick, params))
        served.append(
            transaction_features(
                tx[TX_DATETIME], tx[TX_AMOUNT], customer_buckets, terminal_buckets, params
            )
        )
        cents = amount_to_cents(tx[TX_AMOUNT])
        key = terminal_bucket_key(tx[TX_DATETIME], params)
        customer_buckets[day] = customer_buckets.get(day, CustomerBucket()).with_transaction(cents)
        terminal_buckets[key] = terminal_buckets.get(key, TerminalBucket()).with_transaction()
        customers[tx[CUSTOMER_ID]], terminals[tx[TERMINAL_ID]] = customer_buckets, terminal_buckets
        if tx[TX_FRAUD]:
            usable = tick if labels_at_once else key  # the bucket key is the usable tick
            heapq.heappush(pending, (usable, tx[TERMINAL_ID], key))
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


RATIOS = FeatureParams(amount_ratio_windows_days=(1, 30))


def test_amount_ratios_follow_the_customer_windows_they_name() -> None:
    raw = raw_frame(
        [
            (D - days(20), 1, 9, 30.0, 0),  # in the 30-day window only
            (D + dt.timedelta(hours=9), 1, 9, 10.0, 0),
            (D + dt.timedelta(hours=10), 1, 9, 20.0, 0),  # id 2: the transaction looked at
            (D + dt.timedelta(hours=11), 1, 9, 0.0, 0),  # a zero amount: ratio 0
        ]
    )
    features = features_both_ways(raw, RATIOS)
    ratio_columns = [column for column in feature_columns(RATIOS) if "ratio" in column]
    assert ratio_columns == ["customer_amount_ratio_1d", "customer_amount_ratio_30d"]
    others = [column for column in feature_columns(RATIOS) if column not in ratio_columns]
    assert others == feature_columns(DEFAULT)
    row = features.row(2, named=True)
    assert row["customer_amount_ratio_1d"] == 2000 * 2 / 3000  # 20 over the mean of 10 and 20
    assert row["customer_amount_ratio_30d"] == 2000 * 3 / 6000  # 20 over the mean of 30, 10, 20
    assert features["customer_amount_ratio_1d"].to_list()[3] == 0.0


def test_an_all_zero_window_reads_as_an_ordinary_amount() -> None:
    raw = raw_frame([(D + dt.timedelta(hours=h), 1, 9, 0.0, 0) for h in range(2)])
    assert features_both_ways(raw, RATIOS)["customer_amount_ratio_30d"].to_list() == [1.0, 1.0]


def test_a_ratio_of_a_window_the_customer_has_not_is_refused() -> None:
    with pytest.raises(ValueError, match=r"amount_ratio_windows_days \[14\] are not"):
        FeatureParams(amount_ratio_windows_days=(14,))


# --- terminal windows -------------------------------------------------------------------------


def test_terminal_window_edges_follow_the_label_delay() -> None:
    # Read at D 09:30: the clock stands on the tick D 09:00, so a label is usable when its
    # transaction is at least 7 days older than that: at or before D-7 09:00:00.
    second = dt.timedelta(seconds=1)
    nine = D + dt.timedelta(hours=9)
    raw = raw_frame(
        [
            (nine - days(37), 5, 1, 10.0, 1),  # usable 30 days ago: just out of 30d
            (nine - days(37) + second, 5, 1, 10.0, 1),  # oldest in 30d
            (nine - days(14), 5, 1, 10.0, 1),  # just out of 7d
            (nine - days(14) + second, 5, 1, 10.0, 0),  # oldest in 7d
            (nine - days(8), 5, 1, 10.0, 1),  # just out of 1d
            (nine - days(8) + second, 5, 1, 10.0, 1),  # oldest in 1d
            (nine - days(7), 5, 1, 10.0, 0),  # usable at D 09:00: the newest in every window
            (nine - days(7) + second, 5, 1, 10.0, 1),  # usable at D 10:00: not yet
            (D + dt.timedelta(hours=1), 5, 1, 10.0, 1),  # earlier the same day
            (nine + dt.timedelta(minutes=30), 6, 1, 10.0, 0),  # id 9: the transaction looked at
            (nine + dt.timedelta(minutes=30), 6, 2, 10.0, 0),  # another terminal
        ]
    )
    row = feature_row(raw, 9)
    assert (row["terminal_nb_tx_1d"], row["terminal_risk_1d"]) == (2.0, 0.5)
    assert (row["terminal_nb_tx_7d"], row["terminal_risk_7d"]) == (4.0, 0.5)
    assert (row["terminal_nb_tx_30d"], row["terminal_risk_30d"]) == (6.0, 4 / 6)


@pytest.mark.parametrize("minute", [0, 20])
def test_a_fraud_counts_from_the_first_hour_after_the_delay_not_a_unit_sooner(
    minute: int,
) -> None:
    """One rule, to the hour: usable from the first whole hour at least 7 days after it."""
    fraud = D + dt.timedelta(hours=10, minutes=minute)
    usable = label_timing(DEFAULT).usable_from(fraud)
    assert usable == D + days(7) + dt.timedelta(hours=10 if minute == 0 else 11)
    readers = [
        usable - dt.timedelta(hours=1),  # one unit before
        usable - dt.timedelta(seconds=1),  # the last second before
        fraud + days(7),  # the delay has passed to the second (the same moment if on the hour)
        usable,  # at: used
    ]
    raw = raw_frame(
        [(fraud, 1, 7, 10.0, 1), *((when, 2, 7, 1.0, 0) for when in sorted(set(readers)))]
    )
    features = features_both_ways(raw)
    times, risks = features[TX_DATETIME].to_list()[1:], features["terminal_risk_1d"][1:]
    seen = dict(zip(times, risks, strict=True))
    assert [seen[when] for when in readers] == [0.0, 0.0, 1.0 if minute == 0 else 0.0, 1.0]


def test_terminal_risk_is_zero_without_matured_history() -> None:
    raw = raw_frame(
        [
            (D - days(3), 1, 7, 10.0, 1),  # history, but its label is not usable on day D
            (D, 2, 7, 20.0, 1),
        ]
    )
    features = features_both_ways(raw)
    for w in DEFAULT.terminal_windows_days:
        assert features[f"terminal_nb_tx_{w}d"].to_list() == [0.0, 0.0]
        assert features[f"terminal_risk_{w}d"].to_list() == [0.0, 0.0]


def test_with_a_one_day_delay_yesterdays_hour_counts() -> None:
    params = FeatureParams(terminal_windows_days=(1,), label_delay_days=1)
    ten = D + dt.timedelta(hours=10)
    raw = raw_frame(
        [
            (ten - days(1), 1, 7, 10.0, 1),
            (ten - dt.timedelta(seconds=1), 2, 7, 20.0, 0),  # 23:59:59 after it: not yet
            (ten, 2, 7, 20.0, 0),  # a day after it: usable
        ]
    )
    features = features_both_ways(raw, params)
    assert features["terminal_nb_tx_1d"].to_list() == [0.0, 0.0, 1.0]
    assert features["terminal_risk_1d"].to_list() == [0.0, 0.0, 1.0]


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
    tick = 1000  # label ticks are hours: a 30-day window reads the last 720 of them
    assert terminal_bucket_ticks(tick, DEFAULT) == range(281, 1001)
    buckets = {280: TerminalBucket(1, 0), 281: TerminalBucket(2, 1), 1005: TerminalBucket(3, 0)}
    assert prune(buckets, terminal_bucket_ticks(tick, DEFAULT)) == {
        281: TerminalBucket(2, 1),
        1005: TerminalBucket(3, 0),  # labels still to come: read later
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
            amount_ratio_windows_days=(2, 5),
        ),
    ],
    ids=["default", "short-windows-one-day-delay-with-ratios"],
)
def test_served_features_equal_offline_features_on_a_random_stream(params: FeatureParams) -> None:
    raw = random_stream(seed=7)
    features = features_both_ways(raw, params)
    # The stream exercises what the windows must get right, so the equality means something.
    columns = feature_columns(params)
    assert features[columns[-1]].max() > 0  # a terminal risk
    assert (features[columns[3]] > 1).sum() > 100  # same-day repeats of a customer


def test_terminal_windows_are_the_handbooks_read_at_the_hour() -> None:
    """(t' - d - w, t' - d] of the handbook, with t' the transaction's time cut to the hour."""
    raw = random_stream(seed=11, size=800, nb_days=50)
    features = build_features(raw, DEFAULT)
    rows = raw.select(TERMINAL_ID, TX_DATETIME, TX_FRAUD).rows()
    delay = dt.timedelta(days=DEFAULT.label_delay_days)
    for (terminal, when, _), served in zip(rows, features.iter_rows(named=True), strict=True):
        newest = when.replace(minute=0, second=0, microsecond=0) - delay
        for w in DEFAULT.terminal_windows_days:
            window = [
                fraud
                for other, at, fraud in rows
                if other == terminal and newest - days(w) < at <= newest
            ]
            risk = sum(window) / len(window) if window else 0.0
            assert (served[f"terminal_nb_tx_{w}d"], served[f"terminal_risk_{w}d"]) == (
                float(len(window)),
                risk,
            )


def test_parity_holds_at_a_one_minute_resolution_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/features.md: the hour is a choice of cost, not of correctness."""
    from fraudops.features import definitions

    def by_the_minute(params: FeatureParams) -> LabelTiming:
        return LabelTiming(dt.timedelta(days=params.label_delay_days), dt.timedelta(minutes=1))

    raw = random_stream(seed=5, size=1500, nb_days=50)
    by_the_hour = build_features(raw, DEFAULT)
    monkeypatch.setattr(definitions, "label_timing", by_the_minute)
    monkeypatch.setattr(sys.modules[__name__], "label_timing", by_the_minute)
    features = features_both_ways(raw)
    assert not features.equals(by_the_hour)  # the minute clock really is in use
    # A window now ends at t cut to the minute, d earlier: check one against that directly.
    row = features.row(1400, named=True)
    newest = row[TX_DATETIME].replace(second=0, microsecond=0) - days(DEFAULT.label_delay_days)
    terminal = raw.filter(
        (pl.col(TERMINAL_ID) == row[TERMINAL_ID])
        & (pl.col(TX_DATETIME) > newest - days(7))
        & (pl.col(TX_DATETIME) <= newest)
    )
    assert row["terminal_nb_tx_7d"] == terminal.height > 0
