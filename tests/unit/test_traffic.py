"""Which replayed days become a retraining batch, and with which labels."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import polars as pl
import pytest

from fraudops.config import SimulateParams
from fraudops.data.datasets import write_raw
from fraudops.data.schema import (
    SCENARIO_GENUINE,
    TRANSACTION_ID,
    TX_DATETIME,
    TX_FRAUD,
    TX_FRAUD_SCENARIO,
)
from fraudops.data.simulate import simulate
from fraudops.local.traffic import following_days, matured_batch, next_day, stored_days
from fraudops.logs.database import open_prediction_log
from fraudops.logs.records import LabelRecord, PredictionRecord
from fraudops.logs.writer import PredictionLogWriter

POPULATION = SimulateParams(customers=60, terminals=120, days=4, seed=1)
NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def layout(tmp_path: Path):
    """Two days of training data, then four days replayed into the journal."""
    raw, journal = tmp_path / "raw", tmp_path / "journal"
    write_raw(simulate(POPULATION.model_copy(update={"days": 2})), raw)
    replayed = following_days(POPULATION, next_day(raw), 4, "none")
    write_raw(replayed, journal)
    engine = open_prediction_log(f"sqlite:///{tmp_path / 'log.db'}")
    yield raw, journal, engine, replayed
    engine.dispose()


def serve(engine, rows: pl.DataFrame, labels: dict[int, int]) -> None:
    """Log ROWS as served and LABELS (transaction id → label) as received."""
    writer = PredictionLogWriter(engine, id_salt="test")
    with writer:
        for row in rows.iter_rows(named=True):
            writer.log_prediction(
                PredictionRecord(
                    request_id=uuid.uuid4().hex,
                    transaction_id=row[TRANSACTION_ID],
                    tx_datetime=row[TX_DATETIME],
                    customer_id=row["customer_id"],
                    terminal_id=row["terminal_id"],
                    features={"x": 1.0},
                    model_name="m",
                    model_version="1",
                    model_alias="champion",
                    arm="champion",
                    score=0.1,
                    decision=False,
                    threshold=0.5,
                    latency_ms=1.0,
                )
            )
        for transaction_id, label in labels.items():
            writer.log_label(LabelRecord(transaction_id, label, NOW - dt.timedelta(days=1)))


def days_of(frame: pl.DataFrame) -> list[dt.date]:
    return sorted(frame[TX_DATETIME].dt.date().unique().to_list())


def test_the_journal_continues_after_the_training_data(layout):
    raw, journal, _, replayed = layout
    assert stored_days(journal)[0] == stored_days(raw)[-1] + dt.timedelta(days=1)
    assert next_day(raw, journal) == stored_days(journal)[-1] + dt.timedelta(days=1)
    assert days_of(replayed) == stored_days(journal)


def test_only_the_leading_fully_labelled_days_mature(layout):
    raw, journal, engine, replayed = layout
    first, second, third, _ = stored_days(journal)
    by_day = {
        day: replayed.filter(pl.col(TX_DATETIME).dt.date() == day) for day in (first, second, third)
    }
    labels = {
        tx: label
        for day in (first, third)
        for tx, label in by_day[day].select(TRANSACTION_ID, TX_FRAUD).iter_rows()
    }
    missing_one = by_day[second].select(TRANSACTION_ID, TX_FRAUD).rows()[1:]
    serve(engine, replayed, labels | dict(missing_one))

    batch = matured_batch(journal, engine, raw, NOW)

    assert days_of(batch) == [first]  # the second lacks a label, so the third waits too
    assert batch.height == by_day[first].height


def test_labels_come_from_the_label_log_and_late_labels_do_not_count(layout):
    raw, journal, engine, replayed = layout
    first = stored_days(journal)[0]
    day = replayed.filter(pl.col(TX_DATETIME).dt.date() == first)
    flipped = day.with_columns((1 - pl.col(TX_FRAUD)).alias(TX_FRAUD))
    serve(engine, day, dict(flipped.select(TRANSACTION_ID, TX_FRAUD).rows()))

    batch = matured_batch(journal, engine, raw, NOW)
    assert batch[TX_FRAUD].to_list() == flipped.sort(TRANSACTION_ID)[TX_FRAUD].to_list()
    genuine = batch.filter(pl.col(TX_FRAUD) == 0)
    assert (genuine[TX_FRAUD_SCENARIO] == SCENARIO_GENUINE).all()

    assert matured_batch(journal, engine, raw, NOW - dt.timedelta(days=2)).is_empty()


def test_days_already_in_the_raw_data_are_not_taken_again(layout):
    raw, journal, engine, replayed = layout
    serve(engine, replayed, dict(replayed.select(TRANSACTION_ID, TX_FRAUD).rows()))
    first_batch = matured_batch(journal, engine, raw, NOW)
    assert days_of(first_batch) == stored_days(journal)
    write_raw(first_batch, raw)
    assert matured_batch(journal, engine, raw, NOW).is_empty()
