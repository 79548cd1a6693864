"""The handbook's time split: periods, the label-delay gap, known-compromised cards."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from fraudops.config import TrainParams
from fraudops.data.schema import CUSTOMER_ID, TRANSACTION_ID, TX_DATETIME, TX_FRAUD
from fraudops.data.split import (
    HANDBOOK_TEST_START,
    final_split,
    time_split,
    validation_splits,
)
from fraudops.features.label_timing import LabelTiming

pytestmark = pytest.mark.data

DAY0 = dt.date(2018, 1, 1)


def day(n: int) -> dt.date:
    return DAY0 + dt.timedelta(days=n)


def daily_frame(days: int, customers: list[int], frauds: set[tuple[int, int]]) -> pl.DataFrame:
    """One transaction per customer per day at noon; (customer, day) in `frauds` is a fraud."""
    rows = [
        (customer, dt.datetime.combine(day(d), dt.time(12)), int((customer, d) in frauds))
        for d in range(days)
        for customer in customers
    ]
    frame = pl.DataFrame(rows, schema=[CUSTOMER_ID, TX_DATETIME, TX_FRAUD], orient="row")
    return frame.with_row_index(TRANSACTION_ID)


def card_days(frame: pl.DataFrame) -> set[tuple[int, int]]:
    return {
        (customer, (stamp.date() - DAY0).days)
        for customer, stamp in frame.select(CUSTOMER_ID, TX_DATETIME).iter_rows()
    }


SMALL = TrainParams(train_days=3, delay_days=2, test_days=3, validation_folds=2)


def test_default_anchor_is_the_end_of_the_data() -> None:
    split = final_split(daily_frame(20, [1], set()), SMALL)

    assert (split.train_start, split.train_end) == (day(12), day(14))
    assert (split.test_start, split.test_end) == (day(17), day(19))
    assert {d for _, d in card_days(split.train)} == {12, 13, 14}
    assert {d for _, d in card_days(split.test)} == {17, 18, 19}


def test_explicit_test_start_and_the_delay_days_are_unused() -> None:
    params = SMALL.model_copy(update={"test_start": day(10)})
    split = final_split(daily_frame(20, [1, 2], set()), params)

    assert split.dates() == {
        "train_start": "2018-01-06",
        "train_end": "2018-01-08",
        "test_start": "2018-01-11",
        "test_end": "2018-01-13",
    }
    used = {d for _, d in card_days(split.train) | card_days(split.test)}
    assert used == {5, 6, 7, 10, 11, 12}
    assert split.train[TRANSACTION_ID].is_sorted()
    assert split.test[TRANSACTION_ID].is_sorted()


def test_known_compromised_cards_leave_the_test_period() -> None:
    # train days 5..7, delay 8..9, test 10..12, every transaction at noon: a test transaction
    # drops its card once a fraud of it from day 5 on is 2 days old (label timing).
    frauds = {
        (1, 6),  # in training: dropped every test day
        (2, 8),  # first delay day: known at noon on day 10, so from the first test day
        (3, 9),  # last delay day: known from day 11 on
        (4, 10),  # in the test period: known from day 12 on; the fraud itself stays
        (5, 4),  # before training: outside the history the rule looks at
    }
    params = SMALL.model_copy(update={"test_start": day(10)})
    split = final_split(daily_frame(20, [1, 2, 3, 4, 5, 6], frauds), params)

    kept = card_days(split.test)
    assert kept == {
        (3, 10),
        (4, 10),
        (4, 11),
        *((customer, d) for customer in (5, 6) for d in (10, 11, 12)),
    }
    assert split.train[TX_FRAUD].sum() == 1  # training keeps every card


@pytest.mark.parametrize("minute", [0, 20])
def test_a_fraud_is_known_from_the_hour_its_label_is_usable_not_a_unit_sooner(
    minute: int,
) -> None:
    """One rule, to the hour: a fraud at 10:MM is known from (day + 2) 10:00 or 11:00."""
    fraud = dt.datetime.combine(day(8), dt.time(10, minute))
    usable = dt.datetime.combine(day(10), dt.time(10 if minute == 0 else 11))
    assert LabelTiming.after_days(SMALL.delay_days).usable_from(fraud) == usable
    readers = [usable - dt.timedelta(hours=1), usable - dt.timedelta(seconds=1), usable]
    times = [dt.datetime.combine(day(d), dt.time(12)) for d in range(10)]
    rows = [(2, t, 0) for t in times] + [(1, fraud, 1)] + [(1, when, 0) for when in readers]
    frame = (
        pl.DataFrame(rows, schema=[CUSTOMER_ID, TX_DATETIME, TX_FRAUD], orient="row")
        .sort(TX_DATETIME)
        .with_row_index(TRANSACTION_ID)
    )
    split = time_split(frame, day(5), train_days=3, delay_days=2, test_days=1)

    card_1 = split.test.filter(pl.col(CUSTOMER_ID) == 1)[TX_DATETIME].to_list()
    assert card_1 == readers[:2]  # the one at the usable hour is dropped


def test_a_fraud_in_the_test_period_drops_its_card_once_its_label_is_usable() -> None:
    frame = daily_frame(10, [1, 2], {(1, 5)})
    split = time_split(frame, day(2), train_days=2, delay_days=1, test_days=3)

    assert card_days(split.test) == {(1, 5), (2, 5), (2, 6), (2, 7)}


def test_a_split_without_a_label_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="label delay"):
        time_split(daily_frame(10, [1], set()), day(2), train_days=2, delay_days=0, test_days=3)


def test_handbook_week_and_validation_folds_on_the_handbook_calendar() -> None:
    days = (dt.date(2018, 9, 30) - dt.date(2018, 4, 1)).days + 1
    frame = daily_frame(days, [1], set()).with_columns(
        pl.col(TX_DATETIME) + (dt.date(2018, 4, 1) - DAY0)
    )
    params = TrainParams(test_start=HANDBOOK_TEST_START)

    final = final_split(frame, params)
    folds = validation_splits(frame, params)

    assert (final.train_start, final.train_end) == (dt.date(2018, 7, 25), dt.date(2018, 7, 31))
    assert (final.test_start, final.test_end) == (dt.date(2018, 8, 8), dt.date(2018, 8, 14))
    assert [f.train_start.isoformat() for f in folds] == [
        "2018-07-11",
        "2018-07-04",
        "2018-06-27",
        "2018-06-20",
    ]
    # The newest validation week is the final training week: selection sees nothing later.
    assert (folds[0].test_start, folds[0].test_end) == (final.train_start, final.train_end)
    assert folds[-1].test_start == dt.date(2018, 7, 4)


def test_a_split_that_needs_missing_days_is_refused() -> None:
    frame = daily_frame(8, [1], set())

    with pytest.raises(ValueError, match="outside"):
        final_split(frame, SMALL.model_copy(update={"test_start": day(6)}))
    with pytest.raises(ValueError, match="outside"):
        validation_splits(frame, SMALL)
