"""Reading the prediction log back for monitoring, backfill and reports.

A window of predictions comes back as one frame, one column per feature, with the label each
transaction had by a given time: a report then sees exactly the labels it could have seen.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, get_args

import pandas as pd
from sqlalchemy import Engine, Subquery, and_, func, select

from fraudops.logs.tables import labels, predictions

TimeColumn = Literal["logged_at", "tx_datetime"]
RowKind = Literal["served", "shadow", "all"]


def read_predictions(
    engine: Engine,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    last_n: int | None = None,
    time_column: TimeColumn = "logged_at",
    labels_received_by: dt.datetime | None = None,
    rows: RowKind = "served",
) -> pd.DataFrame:
    """A window of logged predictions, one column per feature, with the labels known by then.

    The window is ``start <= time < end`` on ``time_column`` (``logged_at`` is aware UTC;
    ``tx_datetime`` is the transaction's own naive clock, as in the raw data), optionally
    only its ``last_n`` newest rows. ``label`` is the newest label received by
    ``labels_received_by`` (all labels when None) and missing while none had arrived, so
    a performance report sees exactly the labels it could have seen at that time.
    """
    if time_column not in get_args(TimeColumn):
        raise ValueError(f"time_column must be one of {get_args(TimeColumn)}, not {time_column!r}")
    if last_n is not None and last_n < 1:
        raise ValueError("last_n must be at least 1")
    when = predictions.c[time_column]
    latest = _latest_labels(labels_received_by)
    query = select(predictions, latest.c.label, latest.c.label_received_at).outerjoin(
        latest, and_(latest.c.transaction_id == predictions.c.transaction_id, latest.c.rank == 1)
    )
    if start is not None:
        query = query.where(when >= start)
    if end is not None:
        query = query.where(when < end)
    if rows != "all":
        query = query.where(predictions.c.is_shadow.is_(rows == "shadow"))
    if last_n is None:
        query = query.order_by(when, predictions.c.id)
    else:
        query = query.order_by(when.desc(), predictions.c.id.desc()).limit(last_n)
    with engine.connect() as connection:
        records = [dict(row) for row in connection.execute(query).mappings()]
    if last_n is not None:
        records.reverse()
    return _frame(records)


def _latest_labels(received_by: dt.datetime | None) -> Subquery:
    rank = func.row_number().over(
        partition_by=labels.c.transaction_id,
        order_by=(labels.c.received_at.desc(), labels.c.id.desc()),
    )
    query = select(
        labels.c.transaction_id,
        labels.c.label,
        labels.c.received_at.label("label_received_at"),
        rank.label("rank"),
    )
    if received_by is not None:
        query = query.where(labels.c.received_at <= received_by)
    return query.subquery("latest_labels")


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    features = pd.DataFrame.from_records([record.pop("features") for record in records])
    clash = {*predictions.c.keys(), "label", "label_received_at"} & set(features.columns)
    if clash:
        raise ValueError(f"feature names clash with log columns: {sorted(clash)}")
    log_columns = [*predictions.c.keys(), "label", "label_received_at"]
    log_columns.remove("features")
    frame = pd.DataFrame.from_records(records, columns=log_columns)
    frame["label"] = frame["label"].astype("Int8")
    frame["logged_at"] = pd.to_datetime(frame["logged_at"], utc=True)
    frame["label_received_at"] = pd.to_datetime(frame["label_received_at"], utc=True)
    return pd.concat([frame, features], axis=1)
