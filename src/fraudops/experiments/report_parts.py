"""What every live report shares: strict models, the log window it read, how numbers print.

The A/B report, the shadow report and the monitoring flow all read a window of the
prediction log and record it in their result, so a rerun reads the same rows. The window
is the one place they touch the log; the statistics never do.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from fraudops.logs.readers import RowKind, TimeColumn, read_predictions
from fraudops.timestamps import naive_utc


class ReportModel(BaseModel):
    """Report parts: immutable, and strict about fields so a stale JSON fails loudly."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ReportWindow(ReportModel):
    """Which logged traffic a report read: ``read_predictions``'s window, recorded."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None
    last_n: int | None = Field(None, ge=1)
    time_column: TimeColumn = "logged_at"
    labels_received_by: dt.datetime | None = None

    def read(self, engine: Engine, rows: RowKind) -> pd.DataFrame:
        """The window's rows; naive bounds are taken as UTC on the aware ``logged_at`` clock."""
        return read_predictions(
            engine,
            start=self._on_clock(self.start),
            end=self._on_clock(self.end),
            last_n=self.last_n,
            time_column=self.time_column,
            labels_received_by=_as_utc(self.labels_received_by),
            rows=rows,
        )

    def _on_clock(self, moment: dt.datetime | None) -> dt.datetime | None:
        if moment is None:
            return None
        if self.time_column == "logged_at":
            return _as_utc(moment)
        return naive_utc(moment)


def _as_utc(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)


class MetricEstimate(ReportModel):
    """A metric's value on one arm and its bootstrap interval (None where undefined)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None


def format_number(value: float | None) -> str:
    """Four significant digits, or "-" where the number is undefined."""
    return "-" if value is None else f"{value:.4g}"


def format_estimate(estimate: MetricEstimate) -> str:
    """The value and, where there is one, its interval in brackets."""
    if estimate.ci_low is None or estimate.ci_high is None:
        return format_number(estimate.value)
    return f"{format_number(estimate.value)} [{estimate.ci_low:.4g}, {estimate.ci_high:.4g}]"
