"""Customer segments: exact assignment on hand-made histories, no future data, online parity."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from fraudops.config import FairnessParams, SimulateParams
from fraudops.data.population import draw_population
from fraudops.data.schema import CUSTOMER_ID, TRANSACTION_ID, TX_AMOUNT, TX_DATETIME
from fraudops.data.simulate import simulate
from fraudops.fairness.segments import (
    NIGHT_SHOPPER,
    REGION,
    SEGMENTS,
    SPEND_TIER,
    TENURE,
    CustomerHistory,
    SegmentRules,
    assign_segments,
    customer_regions,
    spend_tier_labels,
)

START = dt.datetime(2018, 4, 1)
RULES = SegmentRules(
    FairnessParams(
        new_customer_days=30,
        spend_tier_edges=(35.0, 70.0),
        night_share=0.5,
        min_history=3,
        region_grid=2,
    ),
    night_last_hour=6,
    simulate=SimulateParams(customers=10, terminals=20, seed=1),
)


def frame(rows: list[tuple[int, dt.datetime, float]]) -> pl.DataFrame:
    """Transactions (customer, time, amount), ids in the given order."""
    return pl.DataFrame(
        {
            TRANSACTION_ID: list(range(len(rows))),
            CUSTOMER_ID: [row[0] for row in rows],
            TX_DATETIME: [row[1] for row in rows],
            TX_AMOUNT: [row[2] for row in rows],
        },
        schema_overrides={TX_DATETIME: pl.Datetime("us")},
    )


def segments_of(rows: list[tuple[int, dt.datetime, float]]) -> list[dict[str, str]]:
    assigned = assign_segments(frame(rows), RULES).sort(TRANSACTION_ID)
    return assigned.select(SEGMENTS).to_dicts()


def test_spend_tier_is_the_mean_of_earlier_amounts_once_there_is_enough_history() -> None:
    day = dt.timedelta(days=1)
    rows = [
        (0, START + i * day + dt.timedelta(hours=12), amount)
        for i, amount in enumerate([30.0, 40.0, 80.0, 500.0, 1.0])
    ]
    tiers = [row[SPEND_TIER] for row in segments_of(rows)]
    # Means before each row: -, 30, 35, 50, 162.5 (three earlier rows needed).
    assert tiers == ["no_history", "no_history", "no_history", "35-70", ">=70"]


def test_the_spend_tier_edge_belongs_to_the_higher_tier() -> None:
    rows = [(0, START + dt.timedelta(hours=10 + i), 35.0) for i in range(4)]
    assert segments_of(rows)[-1][SPEND_TIER] == "35-70"
    assert spend_tier_labels((35.0, 70.0)) == ["<35", "35-70", ">=70"]


def test_tenure_counts_days_since_the_first_transaction_seen() -> None:
    rows = [
        (0, START, 10.0),
        (0, START + dt.timedelta(days=30) - dt.timedelta(seconds=1), 10.0),
        (0, START + dt.timedelta(days=30), 10.0),
        (1, START + dt.timedelta(days=40), 10.0),
    ]
    assert [row[TENURE] for row in segments_of(rows)] == ["new", "new", "established", "new"]


def test_night_shoppers_have_half_their_earlier_payments_at_night() -> None:
    hours = [3, 6, 7, 12, 12, 2]  # 6:59 still counts as night (night_last_hour 6)
    rows = [
        (0, START + dt.timedelta(days=i, hours=hour, minutes=59), 10.0)
        for i, hour in enumerate(hours)
    ]
    habits = [row[NIGHT_SHOPPER] for row in segments_of(rows)]
    # Night shares before rows 4..6: 2/3, 2/4, 2/5.
    assert habits == ["no_history"] * 3 + ["night", "night", "day"]


def test_a_later_transaction_never_changes_an_earlier_segment() -> None:
    rows = [(0, START + dt.timedelta(hours=i), 20.0 + i) for i in range(6)]
    later = [*rows, (0, START + dt.timedelta(days=60), 1000.0)]
    assert segments_of(later)[:6] == segments_of(rows)


def test_regions_are_the_grid_cells_of_the_simulated_homes() -> None:
    simulate_params = SimulateParams(customers=400, terminals=50, seed=7)
    regions = customer_regions(simulate_params, grid=2)
    # The replay is right if the population's next draw (mean amounts) follows it.
    rng = np.random.default_rng(simulate_params.seed)
    xy = rng.uniform(0, 100, size=(400, 2))
    mean_amount = rng.uniform(5, 100, size=400)
    np.testing.assert_array_equal(mean_amount, draw_population(simulate_params).mean_amount)
    expected = [f"x{int(x >= 50)}y{int(y >= 50)}" for x, y in xy]
    assert regions[REGION].to_list() == expected
    assert set(expected) == {"x0y0", "x0y1", "x1y0", "x1y1"}


def test_customers_outside_the_simulated_population_have_an_unknown_region() -> None:
    rows = [(3, START, 10.0), (99, START, 10.0)]
    assert [row[REGION] for row in segments_of(rows)][1] == "unknown"


def test_serving_one_transaction_at_a_time_gives_the_offline_segments() -> None:
    raw = simulate(SimulateParams(customers=20, terminals=400, days=60, seed=1))
    offline = assign_segments(raw, RULES).sort(TRANSACTION_ID)
    histories: dict[int, CustomerHistory] = {}
    online = []
    for row in raw.sort(TX_DATETIME, TRANSACTION_ID).iter_rows(named=True):
        customer, when = row[CUSTOMER_ID], row[TX_DATETIME]
        history = histories.get(customer, CustomerHistory())
        online.append(
            {TRANSACTION_ID: row[TRANSACTION_ID], **history.segments(customer, when, RULES)}
        )
        histories[customer] = history.after(when, row[TX_AMOUNT], RULES)
    online_frame = pl.DataFrame(online).sort(TRANSACTION_ID)
    assert online_frame.to_dicts() == offline.select(TRANSACTION_ID, *SEGMENTS).to_dicts()
    assert offline[TENURE].n_unique() == 2 and offline[SPEND_TIER].n_unique() >= 3


def test_missing_columns_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="tx_amount"):
        assign_segments(frame([(0, START, 1.0)]).drop(TX_AMOUNT), RULES)


def test_spend_tier_edges_must_increase() -> None:
    with pytest.raises(ValueError, match="must increase"):
        FairnessParams(spend_tier_edges=(70.0, 35.0))
