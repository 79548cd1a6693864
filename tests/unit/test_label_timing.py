"""The one label timing rule: its arithmetic, and that every consumer switches at its instant.

Features (offline and through a real SQLite online store), the split's known-card removal and
the traffic replay's label feed are each asked, around the moment a fraud label becomes
usable, whether they use it: all must answer "no" one hour and one second before and "yes"
from that moment on, for a delay that is not the default.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import polars as pl
import pytest
from pydantic import ValidationError

from fraudops.config import FeatureParams, Params, TrainParams
from fraudops.data.schema import (
    CUSTOMER_ID,
    RAW_SCHEMA,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
    TX_FRAUD_SCENARIO,
)
from fraudops.data.split import time_split
from fraudops.features.definitions import build_features
from fraudops.features.label_timing import LABEL_RESOLUTION, LabelTiming, label_timing
from fraudops.features.online_store import open_online_store
from fraudops.features.store_types import Transaction
from fraudops.local.traffic import ReplayConfig, replay

pytestmark = pytest.mark.data

HOUR, SECOND = dt.timedelta(hours=1), dt.timedelta(seconds=1)

# --- the arithmetic ---------------------------------------------------------------------------


def test_a_label_is_usable_from_the_first_hour_at_least_the_delay_after_its_transaction() -> None:
    rule = LabelTiming.after_days(7)
    on_the_hour = dt.datetime(2018, 6, 1, 10)
    assert rule.usable_from(on_the_hour) == dt.datetime(2018, 6, 8, 10)
    assert rule.usable_from(on_the_hour + SECOND) == dt.datetime(2018, 6, 8, 11)
    assert rule.usable_from(on_the_hour - SECOND) == dt.datetime(2018, 6, 8, 10)
    usable = rule.usable_from(on_the_hour)
    assert not rule.is_usable(on_the_hour, usable - HOUR)
    assert not rule.is_usable(on_the_hour, usable - SECOND)
    assert rule.is_usable(on_the_hour, usable)
    # The reader's clock stands on its hour: at 11:20 the labels usable at 11:00 are read.
    assert rule.is_usable(on_the_hour + SECOND, usable + HOUR + 20 * 60 * SECOND)
    assert rule.tick(usable) == rule.usable_tick(on_the_hour)


def test_aware_times_are_read_in_utc() -> None:
    rule = LabelTiming.after_days(1)
    local = dt.datetime(2018, 6, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert rule.usable_from(local) == dt.datetime(2018, 6, 2, 11)
    assert rule.tick(local) == rule.tick(dt.datetime(2018, 6, 1, 10, 30))


def test_the_polars_expressions_compute_the_same_ticks() -> None:
    rule = LabelTiming.after_days(7)
    start = dt.datetime(2018, 4, 1)
    times = [start + k * 997 * SECOND for k in range(2000)] + [start + 5 * HOUR, start - SECOND]
    frame = pl.DataFrame({TX_DATETIME: times}, schema={TX_DATETIME: pl.Datetime("us")})
    ticks = frame.select(
        rule.tick_expr(pl.col(TX_DATETIME)).alias("tick"),
        rule.usable_tick_expr(pl.col(TX_DATETIME)).alias("usable"),
    )
    assert ticks["tick"].to_list() == [rule.tick(t) for t in times]
    assert ticks["usable"].to_list() == [rule.usable_tick(t) for t in times]


@pytest.mark.parametrize(
    ("delay", "resolution"),
    [(dt.timedelta(0), HOUR), (HOUR * 1.5, HOUR), (HOUR, 7 * HOUR), (HOUR, dt.timedelta(0))],
)
def test_delays_and_resolutions_that_break_the_ticks_are_refused(
    delay: dt.timedelta, resolution: dt.timedelta
) -> None:
    with pytest.raises(ValueError, match="label"):
        LabelTiming(delay, resolution)


def test_params_refuse_a_split_gap_other_than_the_label_delay() -> None:
    with pytest.raises(ValidationError, match=r"must equal features\.label_delay_days"):
        Params.model_validate({"features": {"label_delay_days": 7}, "train": {"delay_days": 3}})
    params = Params.model_validate(
        {"features": {"label_delay_days": 3}, "train": {"delay_days": 3}}
    )
    assert label_timing(params.features) == LabelTiming.after_days(params.train.delay_days)


# --- one rule, every consumer -----------------------------------------------------------------

DELAY_DAYS = 2
FEATURES = FeatureParams(terminal_windows_days=(1,), label_delay_days=DELAY_DAYS)
RULE = label_timing(FEATURES)
FRAUD_AT = dt.datetime(2018, 6, 10, 10, 20)  # card 1 at terminal 7
USABLE = dt.datetime(2018, 6, 12, 11)
#: Readers, each a transaction of card 1 at terminal 7: two before the label is usable.
READERS = [USABLE - HOUR, USABLE - SECOND, USABLE, USABLE + SECOND]
EXPECTED = [False, False, True, True]


def stream() -> pl.DataFrame:
    """The fraud, the readers, and a quiet card 2 every day from 06-09 to 06-12 (ids in time
    order)."""
    quiet = [(dt.datetime(2018, 6, 9 + d, 3), 2, 8, 0) for d in range(4)]
    rows = sorted([(FRAUD_AT, 1, 7, 1), *((t, 1, 7, 0) for t in READERS), *quiet])
    return pl.DataFrame(
        {
            TRANSACTION_ID: range(len(rows)),
            TX_DATETIME: [r[0] for r in rows],
            CUSTOMER_ID: [r[1] for r in rows],
            TERMINAL_ID: [r[2] for r in rows],
            TX_AMOUNT: [10.0] * len(rows),
            TX_FRAUD: [r[3] for r in rows],
            TX_FRAUD_SCENARIO: [r[3] for r in rows],
        },
        schema=RAW_SCHEMA,
    )


def readers_of(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col(TX_DATETIME).is_in(READERS)).sort(TX_DATETIME)


def test_every_consumer_uses_the_label_from_the_same_instant(tmp_path: Path) -> None:
    assert RULE.usable_from(FRAUD_AT) == USABLE and RULE.resolution == LABEL_RESOLUTION
    raw = stream()
    used: dict[str, list[bool]] = {}

    offline = readers_of(build_features(raw, FEATURES))
    used["offline features"] = [n > 0 for n in offline["terminal_nb_tx_1d"]]

    with open_online_store(f"sqlite:///{tmp_path / 'online.db'}", FEATURES) as store:
        assert store.timing == RULE
        served = []
        for tx_id, when, customer, terminal, amount, fraud in raw.select(
            TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT, TX_FRAUD
        ).iter_rows():
            features = store.score_features(Transaction(tx_id, when, customer, terminal, amount))
            if fraud:
                store.record_label(tx_id, 1)  # received at once: the rule alone holds it back
            if when in READERS:
                served.append(features["terminal_risk_1d"] > 0)
    used["online store"] = served

    train = TrainParams(train_days=1, delay_days=DELAY_DAYS, test_days=1)
    assert LabelTiming.after_days(train.delay_days) == RULE
    split = time_split(raw, dt.date(2018, 6, 9), train_days=1, delay_days=DELAY_DAYS, test_days=1)
    kept = set(split.test[TX_DATETIME].to_list())
    used["split's known cards"] = [when not in kept for when in READERS]

    config = ReplayConfig(base_url="http://replay.test", seconds_per_day=0, label_delay_days=2)
    assert config.label_timing == RULE
    used["replay's label feed"] = label_posted_before(raw, config)

    assert used == dict.fromkeys(used, EXPECTED)


def label_posted_before(raw: pl.DataFrame, config: ReplayConfig) -> list[bool]:
    """Per reader, whether the replay had posted the fraud's label before sending it."""
    posted, seen = False, []

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal posted
        body = json.loads(request.content)
        if request.url.path == "/v1/feedback":
            posted = posted or body["label"] == 1
            return httpx.Response(200, json={})
        for tx in body["transactions"]:
            if dt.datetime.fromisoformat(tx["timestamp"]) in READERS:
                seen.append(posted)
        return httpx.Response(200, json={"results": body["transactions"]})

    replay(raw, config, transport=httpx.MockTransport(handle))
    return seen
