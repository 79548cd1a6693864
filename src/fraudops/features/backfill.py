"""Backfill: the state serving would hold after a given day, computed from offline data.

A store started mid-stream needs the buckets and index entries that live traffic would have
left behind. They are computed here once, as polars frames, for any backend to write: the
aggregation is the same for SQLite and Redis, only the writing differs (each backend's
``_write_backfill``). It is a batch job over a whole data set, so it lives apart from the
request path.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from fraudops.config import FeatureParams
from fraudops.data.schema import (
    CUSTOMER_ID,
    EPOCH,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
    days_since_epoch,
)
from fraudops.features.definitions import (
    CENTS_PER_UNIT,
    customer_bucket_days,
    terminal_bucket_ticks,
)
from fraudops.features.label_timing import label_timing
from fraudops.features.store_types import BackfillSummary, BucketPlan

# The frames' column names, which the backends' writers select by.
DAY = "day"
USABLE_TICK = "usable_tick"
CENTS = "amount_cents"
NB_TX = "nb_tx"
NB_FRAUD = "nb_fraud"
_LABEL = "label"


@dataclass(frozen=True)
class BackfillState:
    """The buckets and index entries to write, and the day they are the state after."""

    plan: BucketPlan
    transactions: int
    customers: pl.DataFrame  # customer_id, day, nb_tx, amount_cents
    terminals: pl.DataFrame  # terminal_id, usable_tick, nb_tx, nb_fraud
    # transaction_id, customer_id, terminal_id, day, usable_tick, amount_cents, label
    index: pl.DataFrame

    def summary(self) -> BackfillSummary:
        return BackfillSummary(
            until=EPOCH + dt.timedelta(days=self.plan.day),
            transactions=self.transactions,
            customer_buckets=self.customers.height,
            terminal_buckets=self.terminals.height,
            indexed_transactions=self.index.height,
            pending_labels=self.index[_LABEL].null_count(),
        )


def backfill_state(
    raw: pl.DataFrame, params: FeatureParams, until: dt.date | None
) -> BackfillState:
    """Aggregate RAW per customer and day and per terminal and label tick, keeping only what
    serving after UNTIL can read."""
    timing = label_timing(params)
    transactions = raw.lazy().select(
        TRANSACTION_ID,
        CUSTOMER_ID,
        TERMINAL_ID,
        pl.col(TX_DATETIME).dt.date().cast(pl.Int32).alias(DAY),
        timing.usable_tick_expr(pl.col(TX_DATETIME)).alias(USABLE_TICK),
        (pl.col(TX_AMOUNT) * CENTS_PER_UNIT).round().cast(pl.Int64).alias(CENTS),
        pl.col(TX_FRAUD).cast(pl.Int64),
    )
    if until is None:
        last_day = transactions.select(pl.col(DAY).max()).collect().item()
        if last_day is None:
            raise ValueError("no transactions to backfill from")
    else:
        last_day = days_since_epoch(until)
    # The clock right after UNTIL: the first tick of the next day. A label usable at that
    # tick or later is still to come from the feed, which delivers it when it is usable.
    next_tick = (last_day + 1) * timing.ticks_per_day
    customer_days = customer_bucket_days(last_day, params)
    terminal_ticks = terminal_bucket_ticks(next_tick, params)
    plan = BucketPlan(
        last_day, customer_days, terminal_ticks, customer_days.start, terminal_ticks.start
    )
    known_fraud = pl.when(pl.col(USABLE_TICK) < next_tick).then(pl.col(TX_FRAUD))
    seen = transactions.filter(pl.col(DAY) <= last_day)
    customers = (
        seen.filter(pl.col(DAY) >= plan.customer_keep_from)
        .group_by(CUSTOMER_ID, DAY)
        .agg(pl.len().cast(pl.Int64).alias(NB_TX), pl.col(CENTS).sum())
    )
    recent = seen.filter(pl.col(USABLE_TICK) >= plan.terminal_keep_from)
    terminals = recent.group_by(TERMINAL_ID, USABLE_TICK).agg(
        pl.len().cast(pl.Int64).alias(NB_TX),
        known_fraud.fill_null(0).sum().alias(NB_FRAUD),
    )
    index = recent.select(
        TRANSACTION_ID,
        CUSTOMER_ID,
        TERMINAL_ID,
        DAY,
        USABLE_TICK,
        CENTS,
        known_fraud.alias(_LABEL),
    )
    count, customer_rows, terminal_rows, index_rows = pl.collect_all(
        [seen.select(pl.len()), customers, terminals, index]
    )
    if index_rows[TRANSACTION_ID].is_duplicated().any():
        raise ValueError("raw data has repeated transaction ids")
    return BackfillState(plan, count.item(), customer_rows, terminal_rows, index_rows)
