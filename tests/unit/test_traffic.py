"""Which replayed days become a retraining batch, and with which labels."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
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
from fraudops.local.traffic import ReplayConfig, following_days, replay
from fraudops.logs.database import open_prediction_log
from fraudops.logs.journal import matured_batch, next_day, stored_days
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


# --- the replay's label feed ------------------------------------------------------------------


def stream(days: int, every: dt.timedelta) -> pl.DataFrame:
    """One transaction every EVERY from 2030-01-01 00:03, a fraud one in five."""
    start, stop = dt.datetime(2030, 1, 1, 0, 3), dt.datetime(2030, 1, 1) + dt.timedelta(days=days)
    times = pl.datetime_range(start, stop, every, eager=True, closed="left")
    return pl.DataFrame(
        {
            TRANSACTION_ID: range(times.len()),
            TX_DATETIME: times,
            "customer_id": [i % 7 for i in range(times.len())],
            "terminal_id": [i % 5 for i in range(times.len())],
            "tx_amount": [10.0] * times.len(),
            TX_FRAUD: [int(i % 5 == 0) for i in range(times.len())],
        }
    )


def recorded_replay(transactions: pl.DataFrame, config: ReplayConfig) -> list[tuple[str, Any]]:
    """Replay TRANSACTIONS into a recorder: ("score", [times]) and ("label", id) in order."""
    events: list[tuple[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/v1/score/batch":
            sent = body["transactions"]
            events.append(("score", [dt.datetime.fromisoformat(t["timestamp"]) for t in sent]))
            return httpx.Response(200, json={"results": sent})
        events.append(("label", body["transaction_id"]))
        return httpx.Response(200, json={})

    stats = replay(transactions, config, transport=httpx.MockTransport(handle))
    assert stats.scored == transactions.height and stats.labels_failed == 0
    assert stats.labels_posted == transactions.height
    return events


def test_the_replay_posts_each_label_at_the_hour_it_becomes_usable() -> None:
    transactions = stream(days=3, every=dt.timedelta(minutes=7))
    config = ReplayConfig(base_url="http://replay.test", seconds_per_day=0, label_delay_days=1)
    events = recorded_replay(transactions, config)

    times = dict(transactions.select(TRANSACTION_ID, TX_DATETIME).iter_rows())
    scored_before: list[dt.datetime] = []
    order = {}  # label id -> (last transaction sent before it, number of batches before it)
    for kind, value in events:
        if kind == "score":
            scored_before.append(max(value))
        else:
            order[value] = (scored_before[-1] if scored_before else None, len(scored_before))
    batches = [value for kind, value in events if kind == "score"]
    for transaction_id, (last_sent, batches_before) in order.items():
        usable = config.label_timing.usable_from(times[transaction_id])
        assert last_sent is not None and last_sent < usable  # not late
        if batches_before < len(batches):
            assert min(batches[batches_before]) >= usable  # not early: sent right when due


def test_a_day_is_fully_labelled_when_the_day_d_days_later_ends() -> None:
    """The hook at the end of day X + d (where monitoring and retraining run) sees every label
    of day X, even the last one's, usable at that midnight; and none of day X + 1 after noon."""
    transactions = stream(days=4, every=dt.timedelta(minutes=7))
    config = ReplayConfig(base_url="http://replay.test", seconds_per_day=0, label_delay_days=1)
    posted: set[int] = set()
    seen_at_day_end: dict[dt.date, set[int]] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/v1/score/batch":
            return httpx.Response(200, json={"results": body["transactions"]})
        posted.add(body["transaction_id"])
        return httpx.Response(200, json={})

    def on_day_end(day: dt.date) -> None:
        seen_at_day_end[day] = set(posted)

    replay(transactions, config, on_day_end=on_day_end, transport=httpx.MockTransport(handle))
    days = transactions.with_columns(pl.col(TX_DATETIME).dt.date().alias("day"))
    first, second = sorted(seen_at_day_end)[:2]
    ids_of = {d: set(days.filter(pl.col("day") == d)[TRANSACTION_ID]) for d in (first, second)}
    assert ids_of[first] <= seen_at_day_end[second]
    late = days.filter((pl.col("day") == second) & (pl.col(TX_DATETIME).dt.hour() >= 12))
    assert not set(late[TRANSACTION_ID]) & seen_at_day_end[second]
