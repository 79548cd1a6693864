"""The replay's scenario schedule, and a replay that resumes with the labels still owed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import polars as pl
import pytest

from fraudops.config import SimulateParams
from fraudops.data.schema import TRANSACTION_ID, TX_AMOUNT, TX_DATETIME
from fraudops.local.scenario_schedule import ScenarioSchedule, ScheduleError, scheduled_days
from fraudops.local.traffic import ReplayConfig, following_days, replay
from fraudops.logs.journal import label_clock_file, owed_labels

pytestmark = pytest.mark.data

POPULATION = SimulateParams(customers=60, terminals=120, days=4, seed=1)
ORIGIN = dt.date(2018, 5, 1)


def test_a_schedule_names_each_scenario_from_its_day_on() -> None:
    schedule = ScenarioSchedule.parse("amount_shift:7, none:0,new_fraud_pattern:28")
    assert str(schedule) == "none:0,amount_shift:7,new_fraud_pattern:28"
    assert [schedule.scenario_on(day) for day in (0, 6, 7, 27, 28, 400)] == [
        "none",
        "none",
        "amount_shift",
        "amount_shift",
        "new_fraud_pattern",
        "new_fraud_pattern",
    ]
    assert ScenarioSchedule.parse("amount_shift:3").scenario_on(2) == "none"
    assert schedule.segments(5, 4) == [(5, 2, "none"), (7, 2, "amount_shift")]
    assert ScenarioSchedule.constant("amount_shift").segments(9, 3) == [(9, 3, "amount_shift")]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("amount_shfit:3", "unknown scenario 'amount_shfit'"),
        ("amount_shift", "whole number"),
        ("amount_shift:-1", "whole number"),
        ("none:0,amount_shift:0", "day 0 already starts none"),
        (" , ", "no SCENARIO:DAY"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_problem(text: str, complaint: str) -> None:
    with pytest.raises(ScheduleError, match=complaint):
        ScenarioSchedule.parse(text)


def test_scheduled_days_are_the_scenarios_days_as_one_scenario_simulates_them() -> None:
    schedule = ScenarioSchedule.parse("none:0,amount_shift:2")
    start = ORIGIN + dt.timedelta(days=1)
    days = scheduled_days(POPULATION, start, 3, schedule, ORIGIN)
    expected = pl.concat(
        [
            following_days(POPULATION, start, 1, "none"),
            following_days(POPULATION, start + dt.timedelta(days=1), 2, "amount_shift"),
        ]
    )
    assert days.equals(expected)
    assert days[TX_DATETIME].dt.date().unique().sort().to_list() == [
        start + dt.timedelta(days=offset) for offset in range(3)
    ]
    assert days[TRANSACTION_ID].is_unique().all()
    shifted = days.filter(pl.col(TX_DATETIME).dt.date() > start)[TX_AMOUNT].mean()
    plain = following_days(POPULATION, start + dt.timedelta(days=1), 2, "none")[TX_AMOUNT].mean()
    assert shifted > 1.3 * plain  # amount_shift scales amounts by 1.5
    constant = scheduled_days(POPULATION, start, 3, ScenarioSchedule.constant("none"), ORIGIN)
    assert constant.equals(following_days(POPULATION, start, 3, "none"))


def test_a_replay_cannot_start_before_its_first_day() -> None:
    with pytest.raises(ValueError, match="before its first day"):
        scheduled_days(
            POPULATION, ORIGIN, 1, ScenarioSchedule.constant("none"), ORIGIN.replace(day=2)
        )


# --- a replay in chunks -----------------------------------------------------------------------


def _recording() -> tuple[httpx.MockTransport, list[tuple[str, int | dt.datetime]]]:
    """An API that scores and takes every label, recording ("label", id) and ("score", time)."""
    events: list[tuple[str, int | dt.datetime]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/v1/score/batch":
            sent = body["transactions"]
            events.extend(("score", dt.datetime.fromisoformat(t["timestamp"])) for t in sent)
            return httpx.Response(200, json={"results": sent})
        events.append(("label", body["transaction_id"]))
        return httpx.Response(200, json={})

    return httpx.MockTransport(handle), events


def test_a_replay_in_chunks_posts_every_label_once_and_at_its_hour(tmp_path: Path) -> None:
    """Two chunks without draining, then a last one that drains, post what one replay would."""
    journal = tmp_path / "traffic" / "raw"
    transactions = following_days(POPULATION, ORIGIN, 6, "none")
    config = ReplayConfig(
        base_url="http://replay.test", seconds_per_day=0, label_delay_days=2, drain_labels=False
    )
    timing = config.label_timing
    transport, events = _recording()
    by_day = transactions.with_columns(pl.col(TX_DATETIME).dt.date().alias("day"))
    chunks = [
        by_day.filter(
            pl.col("day").is_between(
                ORIGIN + dt.timedelta(days=first), ORIGIN + dt.timedelta(days=first + 1)
            )
        ).drop("day")
        for first in (0, 2, 4)
    ]
    replay(chunks[0], config, journal=journal, transport=transport)
    owed = owed_labels(journal, timing)
    first_chunk = set(chunks[0][TRANSACTION_ID])
    # After two days and a two-day delay, every label of the chunk is still owed.
    assert {transaction_id for _, transaction_id, _ in owed} == first_chunk
    assert label_clock_file(journal).read_text().strip() == "2018-05-03T00:00:00"

    replay(chunks[1], config, journal=journal, transport=transport)
    last = ReplayConfig(base_url="http://replay.test", seconds_per_day=0, label_delay_days=2)
    replay(chunks[2], last, journal=journal, transport=transport)
    assert owed_labels(journal, timing) == []

    labelled = [value for kind, value in events if kind == "label"]
    assert sorted(labelled) == sorted(transactions[TRANSACTION_ID].to_list())  # each once
    usable = {
        transaction_id: timing.usable_from(when)
        for when, transaction_id in transactions.select(TX_DATETIME, TRANSACTION_ID).iter_rows()
    }
    # Not late: every transaction sent before a label came before the label's hour ...
    last_sent: dt.datetime | None = None
    for kind, value in events:
        if kind == "score":
            last_sent = value  # type: ignore[assignment]
        else:
            assert last_sent is not None and last_sent < usable[value]  # type: ignore[index]
    # ... and not early: the next transaction sent after it is at or past that hour.
    next_sent: dt.datetime | None = None
    for kind, value in reversed(events):
        if kind == "score":
            next_sent = value  # type: ignore[assignment]
        else:
            assert next_sent is None or next_sent >= usable[value]  # type: ignore[index]


def test_without_a_label_clock_nothing_is_owed(tmp_path: Path) -> None:
    journal = tmp_path / "traffic" / "raw"
    config = ReplayConfig(base_url="http://replay.test", seconds_per_day=0, label_delay_days=2)
    transport, _ = _recording()
    replay(
        following_days(POPULATION, ORIGIN, 2, "none"), config, journal=journal, transport=transport
    )
    label_clock_file(journal).unlink()
    assert owed_labels(journal, config.label_timing) == []
