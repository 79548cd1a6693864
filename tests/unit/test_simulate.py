"""The simulator: shape of its output, its fraud rules and scenarios, its determinism."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from fraudops.config import SimulateParams
from fraudops.data.drift_scenarios import (
    AMOUNT_SHIFT_FACTOR,
    NIGHT_PATTERN_AMOUNT_CEILING,
    NIGHT_PATTERN_END_S,
)
from fraudops.data.population import (
    TERMINAL_RADIUS,
    Transactions,
    draw_population,
    terminals_within_radius,
)
from fraudops.data.schema import (
    CUSTOMER_ID,
    RAW_SCHEMA,
    SCENARIO_COMPROMISED_CUSTOMER,
    SCENARIO_COMPROMISED_TERMINAL,
    SCENARIO_GENUINE,
    SCENARIO_HIGH_AMOUNT,
    SCENARIO_NIGHT_SMALL_AMOUNT,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
    TX_FRAUD_SCENARIO,
)
from fraudops.data.simulate import MAX_TX_PER_DAY, simulate, to_frame

pytestmark = pytest.mark.data

SMALL = SimulateParams(customers=200, terminals=400, days=40, seed=11)


@pytest.fixture(scope="module")
def baseline() -> pl.DataFrame:
    return simulate(SMALL)


def scenario(name: str) -> pl.DataFrame:
    return simulate(SMALL.model_copy(update={"scenario": name}))


def fraud_rate(frame: pl.DataFrame) -> float:
    return float(frame[TX_FRAUD].mean())


def test_columns_and_dtypes_are_the_raw_schema(baseline):
    assert dict(baseline.schema) == RAW_SCHEMA
    assert baseline.null_count().sum_horizontal().item() == 0


def test_same_params_give_an_identical_frame_and_another_seed_does_not(baseline):
    assert simulate(SMALL).equals(baseline)
    assert not simulate(SMALL.model_copy(update={"seed": 12})).equals(baseline)


def test_ids_are_unique_in_time_order_and_numbered_per_day(baseline):
    assert baseline[TRANSACTION_ID].is_unique().all()
    assert baseline[TRANSACTION_ID].is_sorted()
    assert baseline[TX_DATETIME].is_sorted()
    day = baseline[TX_DATETIME].dt.date()
    epoch_day = (day - dt.date(1970, 1, 1)).dt.total_days()
    assert (baseline[TRANSACTION_ID] // MAX_TX_PER_DAY == epoch_day).all()
    ranks = baseline.select(rank=pl.col(TRANSACTION_ID) % MAX_TX_PER_DAY, day=day)
    per_day = ranks.group_by("day").agg(
        first=pl.col("rank").min(), last=pl.col("rank").max(), count=pl.len()
    )
    assert (per_day["first"] == 0).all()
    assert (per_day["last"] == per_day["count"] - 1).all()


def test_transactions_fall_inside_the_simulated_days_and_never_at_midnight(baseline):
    start = dt.datetime.combine(SMALL.start, dt.time())
    assert baseline[TX_DATETIME].min() > start
    assert baseline[TX_DATETIME].max() < start + dt.timedelta(days=SMALL.days)
    assert (baseline[TX_DATETIME].dt.time() != dt.time()).all()
    assert baseline[TX_DATETIME].dt.date().n_unique() == SMALL.days


def test_amounts_are_non_negative_cents(baseline):
    cents = baseline[TX_AMOUNT] * 100
    assert baseline[TX_AMOUNT].min() >= 0
    assert ((cents - cents.round()).abs() < 1e-6).all()


def test_labels_follow_the_scenario_codes(baseline):
    assert (baseline[TX_FRAUD] == (baseline[TX_FRAUD_SCENARIO] != SCENARIO_GENUINE)).all()
    codes = set(baseline[TX_FRAUD_SCENARIO].unique())
    assert codes == {
        SCENARIO_GENUINE,
        SCENARIO_HIGH_AMOUNT,
        SCENARIO_COMPROMISED_TERMINAL,
        SCENARIO_COMPROMISED_CUSTOMER,
    }
    assert baseline.filter(pl.col(TX_AMOUNT) > 220)[TX_FRAUD].min() == 1


def test_customers_only_use_terminals_within_the_radius(baseline):
    population = draw_population(SMALL)
    pairs = {
        (customer, int(terminal))
        for customer in range(population.n_customers)
        for terminal in population.terminal_ids[
            population.terminal_offsets[customer] : population.terminal_offsets[customer + 1]
        ]
    }
    used = set(baseline.select(CUSTOMER_ID, TERMINAL_ID).unique().iter_rows())
    assert used <= pairs
    without_terminal = np.flatnonzero(population.terminal_counts == 0)
    assert not baseline[CUSTOMER_ID].is_in(without_terminal.tolist()).any()


def test_radius_search_matches_a_full_distance_matrix():
    rng = np.random.default_rng(0)
    customers, terminals = rng.uniform(0, 100, (300, 2)), rng.uniform(0, 100, (2_000, 2))
    offsets, ids = terminals_within_radius(customers, terminals, TERMINAL_RADIUS)
    distance = np.linalg.norm(customers[:, None, :] - terminals[None, :, :], axis=-1)
    expected_customer, expected_terminal = np.nonzero(distance < TERMINAL_RADIUS)
    assert np.array_equal(np.repeat(np.arange(300), np.diff(offsets)), expected_customer)
    assert np.array_equal(ids, expected_terminal)


def test_default_scenario_has_a_realistic_fraud_rate(baseline):
    assert 0.001 < fraud_rate(baseline) < 0.02


def test_amount_shift_scales_spending_but_keeps_the_fraud_rate(baseline):
    shifted = scenario("amount_shift")
    assert shifted.height == baseline.height
    ratio = shifted[TX_AMOUNT].mean() / baseline[TX_AMOUNT].mean()
    assert ratio == pytest.approx(AMOUNT_SHIFT_FACTOR, rel=0.01)
    assert fraud_rate(shifted) == pytest.approx(fraud_rate(baseline), abs=0.0005)


def seconds_of_day(frame: pl.DataFrame) -> pl.Series:
    stamp = frame[TX_DATETIME]
    return (stamp - stamp.dt.truncate("1d")).dt.total_seconds()


def night_share(frame: pl.DataFrame) -> float:
    return float((seconds_of_day(frame) < NIGHT_PATTERN_END_S).mean())


def test_new_fraud_pattern_raises_the_fraud_rate_while_inputs_barely_move(baseline):
    drifted = scenario("new_fraud_pattern")
    new_pattern = drifted.filter(pl.col(TX_FRAUD_SCENARIO) == SCENARIO_NIGHT_SMALL_AMOUNT)
    assert new_pattern.height > 0
    assert new_pattern[TX_AMOUNT].max() < NIGHT_PATTERN_AMOUNT_CEILING
    assert seconds_of_day(new_pattern).max() < NIGHT_PATTERN_END_S
    pattern_terminals = draw_population(SMALL).night_pattern_terminals.tolist()
    assert new_pattern[TERMINAL_ID].is_in(pattern_terminals).all()
    assert 0.003 < fraud_rate(drifted) - fraud_rate(baseline) < 0.015
    assert drifted.height / baseline.height == pytest.approx(1, abs=0.01)
    assert drifted[TX_AMOUNT].mean() == pytest.approx(baseline[TX_AMOUNT].mean(), rel=0.02)
    assert night_share(drifted) == pytest.approx(night_share(baseline), abs=0.01)


def test_a_later_batch_shares_customers_but_not_activity_or_ids(baseline):
    later_start = SMALL.start + dt.timedelta(days=SMALL.days)
    later = simulate(SMALL.model_copy(update={"start": later_start}))
    assert not later[TRANSACTION_ID].is_in(baseline[TRANSACTION_ID].implode()).any()
    assert later[TX_DATETIME].min() > baseline[TX_DATETIME].max()
    assert set(later[CUSTOMER_ID]) == set(baseline[CUSTOMER_ID])
    per_customer = [
        frame.group_by(CUSTOMER_ID).len().sort(CUSTOMER_ID)["len"] for frame in (baseline, later)
    ]
    assert not per_customer[0].equals(per_customer[1])


def test_a_day_beyond_the_id_range_is_refused():
    n = MAX_TX_PER_DAY + 1
    zeros = np.zeros(n, dtype=np.int64)
    crowded = Transactions(
        customer=zeros,
        day=zeros,
        second=np.full(n, 3600),
        terminal=zeros,
        amount=np.ones(n),
        scenario=zeros.astype(np.int8),
    )
    with pytest.raises(ValueError, match="at most 1,000,000 a day"):
        to_frame(crowded, SMALL.start)


@pytest.mark.slow
def test_default_scale_matches_the_handbook():
    frame = simulate(SimulateParams())
    assert 1_600_000 <= frame.height <= 1_900_000
    assert 0.005 <= fraud_rate(frame) <= 0.01
