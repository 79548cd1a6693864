"""Customer segments of each transaction, from the customer's earlier transactions only.

A card issuer's segments: spend tier (the customer's mean amount so far), tenure (new or
established), region (where the customer lives) and night-time shoppers. Every segment
but region comes from transactions alone, and only from those before the one being
segmented, so training, monitoring and a serving process that sees one transaction at a
time assign the same segment: offline, `assign_segments` builds a customer's history
with cumulative sums; online, `CustomerHistory` keeps the same four numbers per customer.
Both hand them to `label_segments`, the one place the rules live.

Region is master data, not behaviour: an issuer knows the billing address. The raw
transactions do not carry it, so `customer_regions` rebuilds each simulated customer's
home from the simulator's population generator (seeded with the seed alone, first draw),
which assumes the data was simulated with ``params.simulate``; customers outside that
population get ``unknown``.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

import numpy as np
import polars as pl

from fraudops.config import FairnessParams, Params, SimulateParams
from fraudops.data.population import AREA_SIZE
from fraudops.data.schema import CUSTOMER_ID, TRANSACTION_ID, TX_AMOUNT, TX_DATETIME

SPEND_TIER = "spend_tier"
TENURE = "tenure"
REGION = "region"
NIGHT_SHOPPER = "night_shopper"
#: The segment columns, in report order.
SEGMENTS = (SPEND_TIER, TENURE, REGION, NIGHT_SHOPPER)

NO_HISTORY = "no_history"
UNKNOWN_REGION = "unknown"
NEW, ESTABLISHED = "new", "established"
NIGHT, DAY = "night", "day"

# The history of a transaction: what the customer did before it.
FIRST_SEEN = "first_seen"
PRIOR_COUNT = "prior_count"
PRIOR_CENTS = "prior_cents"
PRIOR_NIGHT = "prior_night"

_CENTS = "_cents"
_NIGHT = "_night"


@dataclass(frozen=True)
class SegmentRules:
    """The thresholds of the segments, and the hours that count as night."""

    fairness: FairnessParams
    night_last_hour: int
    simulate: SimulateParams

    @classmethod
    def of(cls, params: Params) -> SegmentRules:
        """Night is the features' night, so the segment and the model agree on it."""
        return cls(params.fairness, params.features.night_last_hour, params.simulate)


def customer_regions(simulate: SimulateParams, grid: int) -> pl.DataFrame:
    """Each simulated customer's region: the grid cell of their home, as ``x{i}y{j}``.

    Replays the population generator's first draw (customer positions); a unit test
    checks the replay against `fraudops.data.population.draw_population`.
    """
    rng = np.random.default_rng(simulate.seed)
    xy = rng.uniform(0.0, AREA_SIZE, size=(simulate.customers, 2))
    cells = np.minimum((xy * grid / AREA_SIZE).astype(np.int64), grid - 1)
    labels = [f"x{i}y{j}" for i, j in cells]
    return pl.DataFrame(
        {CUSTOMER_ID: np.arange(simulate.customers, dtype=np.int64), REGION: labels}
    )


def assign_segments(transactions: pl.DataFrame, rules: SegmentRules) -> pl.DataFrame:
    """Transaction id, customer id and every segment of each transaction of TRANSACTIONS.

    A transaction's history is the customer's transactions strictly before it (by time,
    then id), within TRANSACTIONS: pass everything since the customer's first day, not
    just the period to report on.
    """
    missing = {TRANSACTION_ID, CUSTOMER_ID, TX_DATETIME, TX_AMOUNT} - set(transactions.columns)
    if missing:
        raise ValueError(f"segments need transaction columns {sorted(missing)}")
    history = transactions.sort(CUSTOMER_ID, TX_DATETIME, TRANSACTION_ID).with_columns(
        (pl.col(TX_AMOUNT) * 100).round().cast(pl.Int64).alias(_CENTS),
        _is_night(rules.night_last_hour).cast(pl.Int64).alias(_NIGHT),
    )
    history = history.with_columns(
        pl.col(TX_DATETIME).first().over(CUSTOMER_ID).alias(FIRST_SEEN),
        (pl.col(TX_DATETIME).cum_count().over(CUSTOMER_ID) - 1).cast(pl.Int64).alias(PRIOR_COUNT),
        (pl.col(_CENTS).cum_sum().over(CUSTOMER_ID) - pl.col(_CENTS)).alias(PRIOR_CENTS),
        (pl.col(_NIGHT).cum_sum().over(CUSTOMER_ID) - pl.col(_NIGHT)).alias(PRIOR_NIGHT),
    )
    return label_segments(history, rules).select(TRANSACTION_ID, CUSTOMER_ID, *SEGMENTS)


def label_segments(history: pl.DataFrame, rules: SegmentRules) -> pl.DataFrame:
    """HISTORY with the segment columns added: the rules, written once for both paths.

    HISTORY has, per transaction, CUSTOMER_ID, TX_DATETIME, FIRST_SEEN, PRIOR_COUNT,
    PRIOR_CENTS and PRIOR_NIGHT.
    """
    fairness = rules.fairness
    known = pl.col(PRIOR_COUNT) >= fairness.min_history
    tenure = pl.col(TX_DATETIME) - pl.col(FIRST_SEEN)
    mean_amount = pl.col(PRIOR_CENTS) / pl.col(PRIOR_COUNT) / 100
    night_share = pl.col(PRIOR_NIGHT) / pl.col(PRIOR_COUNT)
    regions = customer_regions(rules.simulate, fairness.region_grid)
    return (
        history.with_columns(
            pl.when(tenure < dt.timedelta(days=fairness.new_customer_days))
            .then(pl.lit(NEW))
            .otherwise(pl.lit(ESTABLISHED))
            .alias(TENURE),
            pl.when(known)
            .then(_spend_tier(mean_amount, fairness.spend_tier_edges))
            .otherwise(pl.lit(NO_HISTORY))
            .alias(SPEND_TIER),
            pl.when(~known)
            .then(pl.lit(NO_HISTORY))
            .when(night_share >= fairness.night_share)
            .then(pl.lit(NIGHT))
            .otherwise(pl.lit(DAY))
            .alias(NIGHT_SHOPPER),
        )
        .join(regions, on=CUSTOMER_ID, how="left", maintain_order="left")
        .with_columns(pl.col(REGION).fill_null(UNKNOWN_REGION))
    )


def spend_tier_labels(edges: tuple[float, ...]) -> list[str]:
    """``<35``, ``35-70``, ``>=70`` for edges (35, 70): one label per tier, lowest first."""
    middle = [f"{low:g}-{high:g}" for low, high in itertools.pairwise(edges)]
    return [f"<{edges[0]:g}", *middle, f">={edges[-1]:g}"]


def _spend_tier(mean_amount: pl.Expr, edges: tuple[float, ...]) -> pl.Expr:
    labels = spend_tier_labels(edges)
    tier: pl.Expr = pl.lit(labels[-1])
    for edge, label in reversed(list(zip(edges, labels[:-1], strict=True))):
        tier = pl.when(mean_amount < edge).then(pl.lit(label)).otherwise(tier)
    return tier


def _is_night(night_last_hour: int) -> pl.Expr:
    return pl.col(TX_DATETIME).dt.hour() <= night_last_hour


@dataclass(frozen=True)
class CustomerHistory:
    """What serving keeps per customer to segment their next transaction: four numbers."""

    first_seen: dt.datetime | None = None
    count: int = 0
    cents: int = 0
    night: int = 0

    def segments(
        self, customer_id: int, tx_datetime: dt.datetime, rules: SegmentRules
    ) -> dict[str, str]:
        """The segments of the customer's transaction at TX_DATETIME, before it is added."""
        row = pl.DataFrame(
            {
                CUSTOMER_ID: [customer_id],
                TX_DATETIME: [tx_datetime],
                FIRST_SEEN: [self.first_seen or tx_datetime],
                PRIOR_COUNT: [self.count],
                PRIOR_CENTS: [self.cents],
                PRIOR_NIGHT: [self.night],
            },
            schema_overrides={CUSTOMER_ID: pl.Int64, TX_DATETIME: pl.Datetime("us")},
        )
        labelled = label_segments(row, rules).row(0, named=True)
        return {name: labelled[name] for name in SEGMENTS}

    def after(
        self, tx_datetime: dt.datetime, amount: float, rules: SegmentRules
    ) -> CustomerHistory:
        """The history once the transaction at TX_DATETIME for AMOUNT has happened."""
        return CustomerHistory(
            first_seen=self.first_seen or tx_datetime,
            count=self.count + 1,
            cents=self.cents + round(amount * 100),
            night=self.night + int(tx_datetime.hour <= rules.night_last_hour),
        )
