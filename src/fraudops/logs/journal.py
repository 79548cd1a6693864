"""The journal: every transaction the API scored, in the raw layout, and what it matures into.

Retraining needs raw transactions, and the prediction log keeps only pseudonyms of the
card and terminal. So the traffic replay (`fraudops.local.traffic`) keeps a *journal*:
every transaction the API scored, in the raw layout, the stand-in for the payment system's
own records. ``matured_batch`` joins it with the labels that actually arrived (the label
log, not the simulator's truth) and returns the whole days whose every label is in: the
new raw batch a retraining records. Since the replay posts a label only once it is
usable, a day X is complete once the label of its last transaction is usable: by the end
of day X + d (at that midnight at the latest).

Beside the journal, a replay that stops early records until when every label was posted;
`owed_labels` gives the next replay the labels still owed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
from sqlalchemy import Engine

from fraudops.config import Settings
from fraudops.data.datasets import PARTITION_PREFIX, partition_dir, read_raw
from fraudops.data.schema import (
    PARTITION_KEY,
    RAW_SCHEMA,
    SCENARIO_GENUINE,
    TRANSACTION_ID,
    TX_DATETIME,
    TX_FRAUD,
    TX_FRAUD_SCENARIO,
)
from fraudops.features.label_timing import LabelTiming
from fraudops.logs.readers import read_predictions


def journal_dir(settings: Settings) -> Path:
    """Where the replay records the transactions the API scored (raw layout)."""
    return settings.home / "traffic" / "raw"


def label_clock_file(journal: Path) -> Path:
    """Where a replay into JOURNAL records the moment up to which every label was posted."""
    return journal.parent / "labels-posted-until"


#: A label waiting for its hour: (when it is usable, transaction id, label).
PendingLabel = tuple[dt.datetime, int, int]


def owed_labels(journal: Path, timing: LabelTiming) -> list[PendingLabel]:
    """The labels of JOURNAL's transactions that no replay has posted yet, earliest first.

    Those usable after the recorded label clock: the replay posts every label due by the
    end of each day before it moves the clock there. Only the days whose labels can still
    be owed are read. Without a clock (no replay stopped early) nothing is owed.
    """
    clock_file = label_clock_file(journal)
    if not clock_file.exists():
        return []
    posted_until = dt.datetime.fromisoformat(clock_file.read_text().strip())
    oldest = (posted_until - timing.delay - dt.timedelta(days=1)).date()
    days = [day for day in stored_days(journal) if day >= oldest]
    if not days:
        return []
    rows = pl.concat([read_raw(partition_dir(journal, day)) for day in days])
    owed = [
        (timing.usable_from(when), transaction_id, label)
        for when, transaction_id, label in rows.select(
            TX_DATETIME, TRANSACTION_ID, TX_FRAUD
        ).iter_rows()
    ]
    return sorted(entry for entry in owed if entry[0] > posted_until)


def stored_days(root: Path) -> list[dt.date]:
    """The days partitioned under ROOT, read from the folder names (no file is opened)."""
    if not root.is_dir():
        return []
    return sorted(
        dt.date.fromisoformat(path.name.removeprefix(PARTITION_PREFIX))
        for path in root.iterdir()
        if path.is_dir() and path.name.startswith(PARTITION_PREFIX)
    )


def next_day(*roots: Path) -> dt.date:
    """The first day after every day stored under ROOTS: where new traffic starts."""
    days = [day for root in roots for day in stored_days(root)]
    if not days:
        raise FileNotFoundError(
            f"no day partitions under {', '.join(map(str, roots))}: generate data first"
        )
    return max(days) + dt.timedelta(days=1)


def matured_batch(
    journal: Path, engine: Engine, raw_dir: Path, labels_by: dt.datetime
) -> pl.DataFrame:
    """The journal's days after RAW_DIR's newest day whose every label arrived by LABELS_BY.

    Labels come from the label log, joined through the prediction log on the transaction
    id: a label that never arrived leaves its day out, and so does every later day, since
    the features of a day read the days before it. ``tx_fraud`` is the label that arrived;
    a row whose label disagrees with the simulator's scenario code loses that code
    (genuine when the label says so). Empty when no new day has matured.
    """
    known = set(stored_days(raw_dir))
    new_days = [day for day in stored_days(journal) if day not in known]
    if not new_days:
        return pl.DataFrame(schema=RAW_SCHEMA)
    sent = read_raw(journal).filter(pl.col(PARTITION_KEY).is_in(new_days))
    labels = _labels_of(engine, min(new_days), labels_by)
    joined = sent.join(labels, on=TRANSACTION_ID, how="left")
    complete = joined.group_by(PARTITION_KEY).agg(pl.col("label").is_not_null().all())
    mature = _leading_days(dict(complete.iter_rows()), new_days)
    batch = joined.filter(pl.col(PARTITION_KEY).is_in(mature))
    agrees = pl.col(TX_FRAUD) == pl.col("label")
    return batch.with_columns(
        pl.when(agrees | (pl.col("label") == 1))
        .then(pl.col(TX_FRAUD_SCENARIO))
        .otherwise(pl.lit(SCENARIO_GENUINE))
        .cast(RAW_SCHEMA[TX_FRAUD_SCENARIO])
        .alias(TX_FRAUD_SCENARIO),
        pl.col("label").cast(RAW_SCHEMA[TX_FRAUD]).alias(TX_FRAUD),
    ).select(list(RAW_SCHEMA))


def _labels_of(engine: Engine, first_day: dt.date, labels_by: dt.datetime) -> pl.DataFrame:
    logged = read_predictions(
        engine,
        start=dt.datetime.combine(first_day, dt.time()),
        time_column="tx_datetime",
        labels_received_by=labels_by,
    )
    frame = logged[[TRANSACTION_ID, "label"]].dropna().drop_duplicates(TRANSACTION_ID)
    return pl.DataFrame(
        {
            TRANSACTION_ID: frame[TRANSACTION_ID].to_numpy(dtype="int64"),
            "label": frame["label"].to_numpy(dtype="int8"),
        },
        schema={TRANSACTION_ID: pl.Int64, "label": pl.Int8},
    )


def _leading_days(complete: dict[dt.date, bool], days: list[dt.date]) -> list[dt.date]:
    """The run of fully labelled days from the first new day, stopping at the first gap."""
    mature = []
    for day in sorted(days):
        if not complete.get(day, False):
            break
        mature.append(day)
    return mature
