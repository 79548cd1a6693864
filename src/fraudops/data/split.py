"""Time-ordered train/test splits: the evaluation protocol of the Fraud Detection Handbook.

Fraud labels arrive late: a card holder reports a fraud days after it happened. A model
trained on the days up to T is therefore first used on day T + delay, and the days in
between (the delay) are never used for training or testing. Random splits would leak
the future into training and overstate every metric.

In a test period, cards already known to be compromised are removed: once a card has a
reported fraud, investigators have blocked it, so flagging it again detects nothing new.
A fraud from the training start on is "known" to a test transaction once its label is
usable then, by the one label timing rule of `fraudops.features.label_timing` (the delay
after the fraud, to the hour) that the features and serving follow too. The delay is
``delay_days``, which `fraudops.config.Params` holds equal to ``features.label_delay_days``;
the same number of whole days is the gap between training and test, so every training
label is usable when the test period starts.

Validation for model selection is prequential (rolling origin): the same split, shifted
back one test period per fold. The most recent validation fold assesses on the last
`test_days` of the final training window, so selection never sees a day after the
training window of the model it selects. With the handbook's week (training from
2018-07-25) the folds train from 07-11, 07-04, 06-27 and 06-20 and assess 07-04..07-31:
the handbook's Ch.5 validation base 2018-07-11 = 07-25 - delay - test period.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from fraudops.config import TrainParams
from fraudops.data.schema import CUSTOMER_ID, TX_DATETIME, TX_FRAUD
from fraudops.features.label_timing import LabelTiming

#: The handbook's single test week on its data (2018-04-01 + 183 days): training
#: 2018-07-25..07-31, delay 08-01..08-07, test 08-08..08-14.
HANDBOOK_TEST_START = dt.date(2018, 8, 8)

_DAY = pl.col(TX_DATETIME).dt.date()


@dataclass(frozen=True)
class TimeSplit:
    """A training period and the test period after the label delay; end dates inclusive."""

    train: pl.DataFrame
    test: pl.DataFrame
    train_start: dt.date
    train_end: dt.date
    test_start: dt.date
    test_end: dt.date

    def dates(self) -> dict[str, str]:
        """The period bounds as ISO strings, ready to log as run parameters."""
        return {
            "train_start": self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(),
        }


def time_split(
    frame: pl.DataFrame, train_start: dt.date, *, train_days: int, delay_days: int, test_days: int
) -> TimeSplit:
    """Train on `train_days` days from `train_start`, test on `test_days` after the delay.

    Days are calendar dates of the transaction time. Known-compromised cards are
    removed from each test day (see the module docstring).
    """
    first_day, last_day = _day_range(frame)
    test_start = train_start + dt.timedelta(days=train_days + delay_days)
    test_end = test_start + dt.timedelta(days=test_days - 1)
    if train_start < first_day or test_end > last_day:
        raise ValueError(
            f"split {train_start}..{test_end} needs data outside {first_day}..{last_day}"
        )
    train_end = test_start - dt.timedelta(days=delay_days + 1)
    train = frame.filter(_DAY.is_between(train_start, train_end))
    test = frame.filter(_DAY.is_between(test_start, test_end))
    history = frame.filter(_DAY.is_between(train_start, test_end))
    return TimeSplit(
        train=train,
        test=_drop_known_compromised(test, history, LabelTiming.after_days(delay_days)),
        train_start=train_start,
        train_end=train_end,
        test_start=test_start,
        test_end=test_end,
    )


def final_split(frame: pl.DataFrame, params: TrainParams) -> TimeSplit:
    """The split the final model is trained and tested on.

    Anchored at `params.test_start`, or at the last `test_days` of the data when that
    is None, so retraining on newer data needs no edit of the parameters.
    """
    return time_split(frame, _final_train_start(frame, params), **_periods(params))


def validation_splits(frame: pl.DataFrame, params: TrainParams) -> list[TimeSplit]:
    """Prequential folds for model selection, most recent first.

    Fold 0 is the final split moved back by delay + test period, so its test period is
    the final training window's last `test_days` days; fold i moves back i test periods.
    """
    base = _final_train_start(frame, params) - dt.timedelta(
        days=params.delay_days + params.test_days
    )
    return prequential_splits(frame, base, n_folds=params.validation_folds, params=params)


def prequential_splits(
    frame: pl.DataFrame, latest_train_start: dt.date, *, n_folds: int, params: TrainParams
) -> list[TimeSplit]:
    """`n_folds` splits, fold i trained from `latest_train_start` - i test periods."""
    return [
        time_split(
            frame,
            latest_train_start - dt.timedelta(days=fold * params.test_days),
            **_periods(params),
        )
        for fold in range(n_folds)
    ]


def _periods(params: TrainParams) -> dict[str, int]:
    return {
        "train_days": params.train_days,
        "delay_days": params.delay_days,
        "test_days": params.test_days,
    }


def _final_train_start(frame: pl.DataFrame, params: TrainParams) -> dt.date:
    test_start = params.test_start
    if test_start is None:
        test_start = _day_range(frame)[1] - dt.timedelta(days=params.test_days - 1)
    return test_start - dt.timedelta(days=params.delay_days + params.train_days)


def _day_range(frame: pl.DataFrame) -> tuple[dt.date, dt.date]:
    if frame.is_empty():
        raise ValueError("cannot split an empty frame")
    days = frame.select(_DAY.min().alias("first"), _DAY.max().alias("last")).row(0)
    return days[0], days[1]


def _drop_known_compromised(
    test: pl.DataFrame, history: pl.DataFrame, timing: LabelTiming
) -> pl.DataFrame:
    """Drop a test transaction whose card has a fraud in `history` whose label is usable at
    the transaction's time (`LabelTiming.is_usable`, in ticks)."""
    known = (
        history.filter(pl.col(TX_FRAUD) == 1)
        .group_by(CUSTOMER_ID)
        .agg(timing.usable_tick_expr(pl.col(TX_DATETIME)).min().alias("known_from"))
    )
    known_from = pl.col(CUSTOMER_ID).replace_strict(
        known[CUSTOMER_ID], known["known_from"], default=None, return_dtype=pl.Int64
    )
    return test.filter(known_from.is_null() | (timing.tick_expr(pl.col(TX_DATETIME)) < known_from))
