"""The fairness report of a window of logged traffic: who the customers are, from raw data.

The prediction log keeps a pseudonym of the card and no amount, so a window cannot be
segmented from its own columns. The customers' history is the raw layout instead: the
training data (``data/raw``) and the traffic replay's journal of every transaction it had
scored (`fraudops.logs.journal.journal_dir`), joined to the window on the transaction
id. The decisions are those logged (``decision``), the labels those that had arrived by
the window's read (``label``); only labelled rows count, as in the quality numbers.

Whatever keeps a report from being made (no journal, a window of other transactions)
raises `SegmentsUnavailable` with the reason, so a monitoring run can record it and go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from fraudops.config import Params, Settings
from fraudops.data.datasets import read_raw
from fraudops.data.rejection import BatchRejected
from fraudops.data.schema import CUSTOMER_ID, RAW_SCHEMA, TRANSACTION_ID, TX_FRAUD
from fraudops.fairness.segment_report import SegmentReport, segment_report
from fraudops.logs.journal import journal_dir
from fraudops.logs.tables import labels, predictions

DECISION = predictions.c.decision.name
LABEL = labels.c.label.name


class SegmentsUnavailable(ValueError):
    """A window's segment report cannot be made; the message says why."""


@dataclass(frozen=True)
class WindowSegments:
    """The report on the labelled rows found in the history, and how many were not."""

    report: SegmentReport
    labelled: int
    not_in_history: int


@dataclass(frozen=True)
class RawHistory:
    """The customers' raw transactions, or why they could not be read."""

    frame: pl.DataFrame | None
    unavailable: str = "no customer history was read"

    @classmethod
    def of(cls, settings: Settings) -> RawHistory:
        """This installation's ``data/raw`` and replay journal; a reason when missing."""
        try:
            return cls(load_history(settings.raw_dir, journal_dir(settings)))
        except (SegmentsUnavailable, BatchRejected) as error:
            return cls(None, str(error))

    def report(self, window: pd.DataFrame, params: Params) -> WindowSegments:
        """`window_segment_report` of WINDOW; `SegmentsUnavailable` without a history."""
        if self.frame is None:
            raise SegmentsUnavailable(self.unavailable)
        return window_segment_report(window, self.frame, params)


@dataclass(frozen=True)
class SegmentSource:
    """What a report per customer segment needs beside the rows: history and params."""

    history: RawHistory
    params: Params


def load_history(raw_dir: Path, journal: Path) -> pl.DataFrame:
    """The raw transactions of RAW_DIR and of the replay's JOURNAL, each once.

    A day can be in both (a retraining files matured journal days into the raw data).
    """
    for folder, what in ((raw_dir, "raw data"), (journal, "traffic journal")):
        if not folder.is_dir():
            raise SegmentsUnavailable(
                f"no {what} at {folder}: segments need the customers' raw transactions"
            )
    frames = [read_raw(folder).select(list(RAW_SCHEMA)) for folder in (raw_dir, journal)]
    return pl.concat(frames).unique(TRANSACTION_ID, keep="first", maintain_order=True)


def window_segment_report(
    window: pd.DataFrame, history: pl.DataFrame, params: Params
) -> WindowSegments:
    """The `SegmentReport` of WINDOW (``read_predictions`` rows) on HISTORY's customers.

    HISTORY is raw transactions (`load_history`) holding the window's and every earlier
    transaction of its customers. Labelled rows missing from it are left out and counted;
    when none is found, or the window lacks a column, `SegmentsUnavailable` says so.
    """
    missing = {TRANSACTION_ID, DECISION, LABEL} - set(window.columns)
    if missing:
        raise SegmentsUnavailable(f"the window lacks the columns {sorted(missing)}")
    rows = window[window[LABEL].notna()].drop_duplicates(TRANSACTION_ID)
    decided = pl.DataFrame(
        {
            TRANSACTION_ID: rows[TRANSACTION_ID].to_numpy(dtype=np.int64),
            TX_FRAUD: rows[LABEL].to_numpy(dtype=np.int8),
            DECISION: rows[DECISION].to_numpy(dtype=bool),
        }
    )
    scored = decided.join(
        history.select(TRANSACTION_ID, CUSTOMER_ID), on=TRANSACTION_ID, how="inner"
    )
    if scored.is_empty():
        raise SegmentsUnavailable(
            f"none of the window's {decided.height} labelled transactions is in the raw "
            "data or the traffic journal"
        )
    customers = history.filter(pl.col(CUSTOMER_ID).is_in(scored[CUSTOMER_ID].implode()))
    report = segment_report(customers, scored, scored[DECISION].to_numpy(), params)
    return WindowSegments(report, decided.height, decided.height - scored.height)
