"""The ``card_testing`` scenario: bursts of tiny payments at several terminals within minutes.

Each burst is checked against its specification, the rest of the data must be exactly the
``none`` scenario's, and the same seed must give the same bursts.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from fraudops.config import SimulateParams
from fraudops.data.drift_scenarios import (
    CARD_TESTING_AMOUNT_CENTS,
    CARD_TESTING_BURST_SIZE,
    CARD_TESTING_CARDS_PER_DAY,
    CARD_TESTING_GAP_S,
    SCENARIO_CARD_TESTING,
)
from fraudops.data.fraud_rules import REFERENCE_CUSTOMERS, compromised_per_day
from fraudops.data.population import draw_population
from fraudops.data.schema import (
    CUSTOMER_ID,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
    TX_FRAUD_SCENARIO,
)
from fraudops.data.simulate import simulate

pytestmark = pytest.mark.data

# 1,000 customers: one burst a day, 60 days.
BASE = SimulateParams(customers=1000, terminals=2000, days=60, seed=21)
# Until config.Scenario lists "card_testing", a validated SimulateParams refuses it.
CARD_TESTING = BASE.model_copy(update={"scenario": "card_testing"})
_DAY = pl.col(TX_DATETIME).dt.date()


@pytest.fixture(scope="module")
def card_testing_data() -> pl.DataFrame:
    return simulate(CARD_TESTING)


@pytest.fixture(scope="module")
def bursts(card_testing_data: pl.DataFrame) -> pl.DataFrame:
    """One row per burst: a card's card-testing payments of one day."""
    seconds = pl.col(TX_DATETIME).dt.epoch("s")
    return (
        card_testing_data.filter(pl.col(TX_FRAUD_SCENARIO) == SCENARIO_CARD_TESTING)
        .group_by(CUSTOMER_ID, _DAY.alias("day"))
        .agg(
            size=pl.len(),
            terminals=pl.col(TERMINAL_ID).n_unique(),
            span_s=seconds.max() - seconds.min(),
            gaps=seconds.sort().diff().drop_nulls(),
            min_amount=pl.col(TX_AMOUNT).min(),
            max_amount=pl.col(TX_AMOUNT).max(),
            frauds=pl.col(TX_FRAUD).sum(),
        )
    )


def test_each_day_has_its_share_of_bursts_on_distinct_cards(bursts):
    expected = compromised_per_day(
        CARD_TESTING_CARDS_PER_DAY, BASE.customers, REFERENCE_CUSTOMERS, BASE.days
    )
    per_day = bursts.group_by("day").len().sort("day")["len"].to_numpy()
    assert expected.sum() == len(bursts) == 60
    assert np.array_equal(per_day, expected[expected > 0])


def test_a_burst_is_several_tiny_payments_at_distinct_terminals_within_minutes(bursts):
    low, high = CARD_TESTING_BURST_SIZE
    assert bursts["size"].is_between(low, high).all()
    assert set(bursts["size"]) == set(range(low, high + 1))  # every size occurs
    assert (bursts["terminals"] == bursts["size"]).all()
    gaps = bursts["gaps"].explode()
    assert gaps.is_between(*CARD_TESTING_GAP_S).all()
    assert bursts["span_s"].max() <= (high - 1) * CARD_TESTING_GAP_S[1]
    assert bursts["min_amount"].min() >= CARD_TESTING_AMOUNT_CENTS[0] / 100
    assert bursts["max_amount"].max() <= CARD_TESTING_AMOUNT_CENTS[1] / 100
    assert (bursts["frauds"] == bursts["size"]).all()


def test_cards_are_customers_with_terminals_and_terminals_are_not_theirs(card_testing_data, bursts):
    population = draw_population(BASE)
    assert (population.terminal_counts[bursts[CUSTOMER_ID].to_numpy()] > 0).all()
    burst_rows = card_testing_data.filter(pl.col(TX_FRAUD_SCENARIO) == SCENARIO_CARD_TESTING)
    own = [
        terminal
        in population.terminal_ids[
            population.terminal_offsets[c] : population.terminal_offsets[c + 1]
        ]
        for c, terminal in burst_rows.select(CUSTOMER_ID, TERMINAL_ID).iter_rows()
    ]
    assert np.mean(own) < 0.05  # drawn from all terminals, so rarely one the card holder uses


def test_the_rest_is_exactly_the_none_scenario(card_testing_data):
    content = [TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT, TX_FRAUD, TX_FRAUD_SCENARIO]
    others = card_testing_data.filter(pl.col(TX_FRAUD_SCENARIO) != SCENARIO_CARD_TESTING)
    others = others.select(content)
    assert others.equals(simulate(BASE).select(content))


def test_bursts_are_deterministic_per_seed(card_testing_data):
    assert simulate(CARD_TESTING).equals(card_testing_data)
    other_seed = simulate(CARD_TESTING.model_copy(update={"seed": 22}))
    keys = [CUSTOMER_ID, TX_DATETIME]
    ours = card_testing_data.filter(pl.col(TX_FRAUD_SCENARIO) == SCENARIO_CARD_TESTING).select(keys)
    theirs = other_seed.filter(pl.col(TX_FRAUD_SCENARIO) == SCENARIO_CARD_TESTING).select(keys)
    assert not ours.equals(theirs)
    assert card_testing_data[TRANSACTION_ID].is_unique().all()
    assert card_testing_data[TX_DATETIME].is_sorted()
