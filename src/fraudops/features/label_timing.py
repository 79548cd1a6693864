"""Label timing: the one rule for when a fraud label may be used, wherever labels are read.

A label is usable once the label delay has passed since its transaction, on a clock that
ticks once per ``resolution`` (one hour): the label of a transaction at time s is usable from
the first tick at or after s + delay, and a reader at time t sees the labels usable at the
last tick at or before t. In ticks: usable when ``tick(t) >= usable_tick(s)``.

Features (terminal windows), the online store, the split's known-card removal and the
traffic replay's label feed all ask a `LabelTiming` built from ``params.features`` (or, in
the split, from ``params.train.delay_days``, which `fraudops.config.Params` requires to be
the same number of days). docs/features.md explains why the resolution is one hour.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import polars as pl

from fraudops.config import FeatureParams
from fraudops.timestamps import naive_utc

#: The clock labels are judged on ticks once an hour: see docs/features.md for the choice.
LABEL_RESOLUTION = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
_EPOCH = dt.datetime(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class LabelTiming:
    """When labels become usable: ``delay`` after the transaction, to ``resolution``.

    Ticks are whole resolutions since 1970-01-01 UTC; a day holds a whole number of them and
    the delay too, so day and window edges fall on ticks.
    """

    delay: dt.timedelta
    resolution: dt.timedelta = LABEL_RESOLUTION

    def __post_init__(self) -> None:
        if self.resolution <= dt.timedelta(0) or DAY % self.resolution:
            raise ValueError(f"a label resolution must divide a day, got {self.resolution}")
        if self.delay < self.resolution or self.delay % self.resolution:
            raise ValueError(
                f"a label delay must be a positive multiple of {self.resolution}, got {self.delay}"
            )

    @classmethod
    def after_days(cls, days: int) -> LabelTiming:
        """The project's rule for a delay of DAYS whole days, at `LABEL_RESOLUTION`."""
        return cls(delay=dt.timedelta(days=days))

    @property
    def ticks_per_day(self) -> int:
        return DAY // self.resolution

    @property
    def delay_ticks(self) -> int:
        return self.delay // self.resolution

    def tick(self, moment: dt.datetime) -> int:
        """The tick a reader at MOMENT stands on: the last one at or before it."""
        return (naive_utc(moment) - _EPOCH) // self.resolution

    def usable_tick(self, tx_time: dt.datetime) -> int:
        """The first tick at which the label of a transaction at TX_TIME is usable."""
        return -((_EPOCH - naive_utc(tx_time)) // self.resolution) + self.delay_ticks

    def usable_from(self, tx_time: dt.datetime) -> dt.datetime:
        """The moment the label of a transaction at TX_TIME becomes usable (naive UTC)."""
        return self.tick_start(self.usable_tick(tx_time))

    def tick_start(self, tick: int) -> dt.datetime:
        return _EPOCH + tick * self.resolution

    def is_usable(self, tx_time: dt.datetime, at: dt.datetime) -> bool:
        """Whether a reader at AT may use the label of a transaction at TX_TIME."""
        return self.tick(at) >= self.usable_tick(tx_time)

    def day_ticks(self, days: int) -> int:
        """Ticks in DAYS whole days: the length of a window of that many days."""
        return days * self.ticks_per_day

    # The same arithmetic on a polars datetime column (floor and ceiling of integers).

    def tick_expr(self, moment: pl.Expr) -> pl.Expr:
        return moment.dt.epoch("us") // self._resolution_us

    def usable_tick_expr(self, tx_time: pl.Expr) -> pl.Expr:
        return -(-tx_time.dt.epoch("us") // self._resolution_us) + self.delay_ticks

    @property
    def _resolution_us(self) -> int:
        return self.resolution // _MICROSECOND


@lru_cache(maxsize=32)
def label_timing(params: FeatureParams) -> LabelTiming:
    """The rule configured in params.yaml (``features.label_delay_days``)."""
    return LabelTiming.after_days(params.label_delay_days)
