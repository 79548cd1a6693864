"""Validation rejects each kind of bad batch with its rule name and an offending example."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import polars as pl
import pytest

from fraudops.config import FeatureParams
from fraudops.data.schema import (
    CUSTOMER_ID,
    PARTITION_KEY,
    RAW_SCHEMA,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
    TX_FRAUD_SCENARIO,
)
from fraudops.data.validation import BatchRejected, validate_features, validate_raw
from fraudops.features.definitions import (
    TX_DURING_NIGHT,
    TX_DURING_WEEKEND,
    customer_avg_amount_column,
    customer_nb_tx_column,
    feature_columns,
    terminal_nb_tx_column,
    terminal_risk_column,
)

pytestmark = pytest.mark.data

START = dt.datetime(2018, 4, 1)
NOW = dt.datetime(2018, 4, 3)
MAX_FRAUD_RATE = 0.5


def raw_batch(rows: int = 20) -> pl.DataFrame:
    """A valid batch over two days: a transaction about every two hours, every tenth a fraud."""
    timestamps = [START + dt.timedelta(hours=2 * i, minutes=i) for i in range(rows)]
    batch = pl.DataFrame(
        {
            TRANSACTION_ID: range(rows),
            TX_DATETIME: timestamps,
            CUSTOMER_ID: [i % 7 for i in range(rows)],
            TERMINAL_ID: [i % 11 for i in range(rows)],
            TX_AMOUNT: [10.0 + i for i in range(rows)],
            TX_FRAUD: [int(i % 10 == 0) for i in range(rows)],
            TX_FRAUD_SCENARIO: [int(i % 10 == 0) for i in range(rows)],
        },
        schema=RAW_SCHEMA,
    )
    return batch.with_columns(pl.col(TX_DATETIME).dt.date().alias(PARTITION_KEY))


def set_value(frame: pl.DataFrame, row: int, column: str, value: object) -> pl.DataFrame:
    """The frame with one cell replaced, keeping the column's dtype."""
    values = frame[column].to_list()
    values[row] = value
    return frame.with_columns(pl.Series(column, values, dtype=frame.schema[column]))


def accepted(check: Callable[[], None]) -> bool:
    """Whether CHECK lets its frame through."""
    try:
        check()
    except BatchRejected:
        return False
    return True


def rejection(check: Callable[[], None]) -> BatchRejected:
    with pytest.raises(BatchRejected) as caught:
        check()
    return caught.value


def section(message: str, rule: str) -> str:
    """The lines a rejection message gives one rule: its header and its examples."""
    lines = message.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{rule}: "))
    end = start + 1
    while end < len(lines) and lines[end].startswith("    "):
        end += 1
    return "\n".join(lines[start:end])


def future_row(batch: pl.DataFrame) -> pl.DataFrame:
    late = dt.datetime(2018, 4, 5, 10)
    batch = set_value(batch, 4, TX_DATETIME, late)
    return set_value(batch, 4, PARTITION_KEY, late.date())


RAW_CASES = [
    pytest.param(
        lambda b: b.with_columns(pl.col(TX_AMOUNT).cast(pl.String)),
        MAX_FRAUD_RATE,
        "wrong_dtypes",
        "column=tx_amount, expected=Float64, found=String",
        id="wrong-types",
    ),
    pytest.param(
        lambda b: b.drop(TX_AMOUNT, PARTITION_KEY),
        MAX_FRAUD_RATE,
        "missing_columns",
        "column=day, expected=Date",
        id="missing-columns",
    ),
    pytest.param(
        lambda b: set_value(b, 3, TX_AMOUNT, -5.0),
        MAX_FRAUD_RATE,
        "negative_amount",
        "transaction_id=3, tx_datetime=2018-04-01 06:03:00, tx_amount=-5.0",
        id="negative-amount",
    ),
    pytest.param(
        lambda b: set_value(b, 3, TX_AMOUNT, float("nan")),
        MAX_FRAUD_RATE,
        "nan_amount",
        "transaction_id=3, tx_datetime=2018-04-01 06:03:00, tx_amount=nan",
        id="nan-amount",
    ),
    pytest.param(
        lambda b: set_value(b, 3, TX_AMOUNT, float("inf")),
        MAX_FRAUD_RATE,
        "infinite_amount",
        "transaction_id=3, tx_datetime=2018-04-01 06:03:00, tx_amount=inf",
        id="infinite-amount",
    ),
    pytest.param(
        lambda b: set_value(b, 5, TRANSACTION_ID, None),
        MAX_FRAUD_RATE,
        "null_values",
        "transaction_id=null, tx_datetime=2018-04-01 10:05:00",
        id="null-id",
    ),
    pytest.param(
        lambda b: set_value(b, 7, TRANSACTION_ID, 6),
        MAX_FRAUD_RATE,
        "duplicate_transaction_ids",
        "transaction_id=6, tx_datetime=2018-04-01 14:07:00",
        id="duplicate-ids",
    ),
    pytest.param(
        future_row,
        MAX_FRAUD_RATE,
        "future_timestamp",
        "transaction_id=4, tx_datetime=2018-04-05 10:00:00",
        id="future-timestamp",
    ),
    pytest.param(
        lambda b: set_value(b, 2, TX_DATETIME, dt.datetime(2018, 4, 2, 1)),
        MAX_FRAUD_RATE,
        "timestamp_outside_day",
        "transaction_id=2, tx_datetime=2018-04-02 01:00:00, day=2018-04-01",
        id="timestamp-outside-day",
    ),
    pytest.param(
        lambda b: b.with_columns(pl.lit(0, dtype=pl.Int8).alias(TX_FRAUD)),
        MAX_FRAUD_RATE,
        "zero_fraud_rate",
        "rows=20, frauds=0, fraud_rate=0.0",
        id="fraud-rate-zero",
    ),
    pytest.param(
        lambda b: b,
        0.05,
        "fraud_rate_above_max",
        "rows=20, frauds=2, fraud_rate=0.1",
        id="fraud-rate-above-max",
    ),
    pytest.param(
        lambda b: set_value(b, 9, TX_FRAUD, 2),
        MAX_FRAUD_RATE,
        "invalid_fraud_label",
        "transaction_id=9, tx_datetime=2018-04-01 18:09:00, tx_fraud=2",
        id="labels-outside-0-1",
    ),
    pytest.param(lambda b: b.clear(), MAX_FRAUD_RATE, "empty_batch", "rows=0", id="empty"),
]


@pytest.mark.parametrize(("spoil", "max_fraud_rate", "rule", "example"), RAW_CASES)
def test_each_bad_batch_is_rejected_by_its_rule_with_an_example(
    spoil: Callable[[pl.DataFrame], pl.DataFrame], max_fraud_rate: float, rule: str, example: str
) -> None:
    batch = spoil(raw_batch())

    exc = rejection(lambda: validate_raw(batch, max_fraud_rate=max_fraud_rate, now=NOW))

    assert exc.rules == [rule]  # rules needing an absent or mistyped column are skipped
    message = str(exc)
    assert message.startswith("batch rejected: 1 rule failed\n")
    assert example in section(message, rule)


def test_a_good_batch_passes() -> None:
    assert accepted(lambda: validate_raw(raw_batch(), max_fraud_rate=MAX_FRAUD_RATE, now=NOW))


def test_every_failing_rule_is_reported_not_only_the_first() -> None:
    batch = set_value(set_value(raw_batch(), 3, TX_AMOUNT, -5.0), 7, TRANSACTION_ID, 6)
    batch = batch.drop(PARTITION_KEY)

    exc = rejection(lambda: validate_raw(batch, max_fraud_rate=MAX_FRAUD_RATE, now=NOW))

    assert set(exc.rules) == {"missing_columns", "negative_amount", "duplicate_transaction_ids"}
    message = str(exc)
    assert message.startswith("batch rejected: 3 rules failed\n")
    assert "tx_amount=-5.0" in section(message, "negative_amount")
    assert "(2 rows)" in section(message, "duplicate_transaction_ids")


def test_duplicate_examples_show_the_copies_side_by_side() -> None:
    batch = set_value(raw_batch(), 7, TRANSACTION_ID, 2)

    exc = rejection(lambda: validate_raw(batch, max_fraud_rate=MAX_FRAUD_RATE, now=NOW))

    (failure,) = exc.failures
    assert [row[TRANSACTION_ID] for row in failure.examples] == [2, 2]


def test_examples_are_capped_at_five_rows_while_the_count_is_exact() -> None:
    batch = raw_batch().with_columns(pl.col(TX_AMOUNT) * -1)

    exc = rejection(lambda: validate_raw(batch, max_fraud_rate=MAX_FRAUD_RATE, now=NOW))

    (failure,) = exc.failures
    assert failure.offending_rows == 20
    assert len(failure.examples) == 5
    assert "(20 rows)" in str(exc)


def test_integer_columns_of_another_width_are_accepted() -> None:
    batch = raw_batch().with_columns(
        pl.col(TX_FRAUD).cast(pl.Int64), pl.col(TRANSACTION_ID).cast(pl.UInt32)
    )

    assert accepted(lambda: validate_raw(batch, max_fraud_rate=MAX_FRAUD_RATE, now=NOW))


def test_a_timestamp_with_another_unit_is_a_wrong_dtype() -> None:
    batch = raw_batch().with_columns(pl.col(TX_DATETIME).dt.cast_time_unit("ns"))

    exc = rejection(lambda: validate_raw(batch, max_fraud_rate=MAX_FRAUD_RATE, now=NOW))

    assert exc.rules == ["wrong_dtypes"]
    assert "found=Datetime(time_unit='ns'" in str(exc)


def test_an_aware_now_is_compared_in_utc() -> None:
    last = raw_batch()[TX_DATETIME].max()
    two_hours_east = dt.timezone(dt.timedelta(hours=2))
    just_before = (last - dt.timedelta(minutes=1)).replace(tzinfo=dt.UTC)

    exc = rejection(
        lambda: validate_raw(
            raw_batch(), max_fraud_rate=MAX_FRAUD_RATE, now=just_before.astimezone(two_hours_east)
        )
    )

    assert exc.rules == ["future_timestamp"]
    assert exc.failures[0].offending_rows == 1


# --- feature frames --------------------------------------------------------------------------

PARAMS = FeatureParams(customer_windows_days=(1, 7), terminal_windows_days=(1, 7))
CUSTOMER_NB_TX = customer_nb_tx_column(7)
CUSTOMER_AVG_AMOUNT = customer_avg_amount_column(7)
TERMINAL_NB_TX = terminal_nb_tx_column(7)
TERMINAL_RISK = terminal_risk_column(7)


def feature_frame(rows: int = 6) -> pl.DataFrame:
    """A valid feature frame: positive counts, risks in [0, 1], 0/1 flags."""
    values: dict[str, list[float]] = {}
    for name in feature_columns(PARAMS):
        if name in {terminal_risk_column(w) for w in PARAMS.terminal_windows_days}:
            values[name] = [i / rows for i in range(rows)]
        elif name in (TX_DURING_WEEKEND, TX_DURING_NIGHT):
            values[name] = [float(i % 2) for i in range(rows)]
        else:
            values[name] = [1.0 + i for i in range(rows)]
    return pl.DataFrame({TRANSACTION_ID: range(100, 100 + rows), **values}).with_columns(
        pl.col(TRANSACTION_ID).cast(pl.Int64)
    )


FEATURE_CASES = [
    pytest.param(
        lambda f: f.drop(TERMINAL_RISK),
        "missing_columns",
        f"column={TERMINAL_RISK}, expected=Float64",
        id="missing-column",
    ),
    pytest.param(
        lambda f: f.with_columns(pl.col(CUSTOMER_NB_TX).cast(pl.Int64)),
        "wrong_dtypes",
        f"column={CUSTOMER_NB_TX}, expected=Float64, found=Int64",
        id="wrong-dtype",
    ),
    pytest.param(
        lambda f: set_value(f, 1, CUSTOMER_AVG_AMOUNT, None),
        "null_values",
        f"transaction_id=101, {CUSTOMER_AVG_AMOUNT}=null",
        id="null",
    ),
    pytest.param(
        lambda f: set_value(f, 2, TERMINAL_RISK, float("nan")),
        "nan_values",
        f"transaction_id=102, {TERMINAL_RISK}=nan",
        id="nan-risk-is-only-nan",
    ),
    pytest.param(
        lambda f: set_value(f, 2, CUSTOMER_AVG_AMOUNT, float("inf")),
        "infinite_values",
        f"transaction_id=102, {CUSTOMER_AVG_AMOUNT}=inf",
        id="infinite",
    ),
    pytest.param(
        lambda f: set_value(f, 3, TERMINAL_NB_TX, -1.0),
        "negative_counts",
        f"transaction_id=103, {TERMINAL_NB_TX}=-1.0",
        id="negative-terminal-count",
    ),
    pytest.param(
        lambda f: set_value(f, 3, CUSTOMER_NB_TX, 0.0),
        "customer_count_below_one",
        f"transaction_id=103, {CUSTOMER_NB_TX}=0.0",
        id="customer-count-zero",
    ),
    pytest.param(
        lambda f: set_value(f, 4, TERMINAL_RISK, 1.5),
        "risk_out_of_range",
        f"transaction_id=104, {TERMINAL_RISK}=1.5",
        id="risk-above-one",
    ),
    pytest.param(
        lambda f: set_value(f, 5, TX_DURING_NIGHT, 0.5),
        "flag_not_binary",
        f"transaction_id=105, {TX_DURING_NIGHT}=0.5",
        id="flag-half",
    ),
    pytest.param(
        lambda f: set_value(f, 5, TRANSACTION_ID, 104),
        "duplicate_transaction_ids",
        "transaction_id=104",
        id="duplicate-ids",
    ),
]


@pytest.mark.parametrize(("spoil", "rule", "example"), FEATURE_CASES)
def test_each_bad_feature_frame_is_rejected_by_its_rule_with_an_example(
    spoil: Callable[[pl.DataFrame], pl.DataFrame], rule: str, example: str
) -> None:
    features = spoil(feature_frame())

    exc = rejection(lambda: validate_features(features, PARAMS))

    assert exc.rules == [rule]
    assert example in section(str(exc), rule)


def test_a_good_feature_frame_passes() -> None:
    assert accepted(lambda: validate_features(feature_frame(), PARAMS))
