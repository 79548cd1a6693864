"""Feature definitions: one spec, computed offline over a frame and online from entity state.

Customer windows are whole calendar days; terminal windows follow the label timing rule of
`fraudops.features.label_timing`: a transaction counts once its label is usable, to the hour
(see docs/features.md). Serving therefore keeps one small bucket per customer and day, and
one per terminal and label tick (the hour its transactions' labels become usable), and
reproduces the offline values exactly by summing a bounded number of buckets.

Both paths read the same windows and do the same integer arithmetic: amounts are summed as
integer cents and every ratio is a single float division of two exact integers, so the result
does not depend on summation order and served values equal offline ones bit for bit.

The module is longer than the others on purpose: the windows' spec, the online sums and the
offline frame stay side by side, so a change to one is seen next to the other two.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from typing import Literal, NamedTuple, TypeVar

import polars as pl

from fraudops.config import FeatureParams
from fraudops.data.schema import (
    CUSTOMER_ID,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
    days_since_epoch,
)
from fraudops.features.label_timing import label_timing
from fraudops.timestamps import naive_utc

TX_DURING_WEEKEND = "tx_during_weekend"
TX_DURING_NIGHT = "tx_during_night"

#: ISO weekday numbers (Monday = 1) of Saturday and Sunday.
WEEKEND_ISO_WEEKDAYS = (6, 7)
CENTS_PER_UNIT = 100

#: Columns `build_features` keeps next to the features: keys, time and the label.
KEY_COLUMNS = (TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_FRAUD)

#: Features fall in groups by what they read: the transaction alone, the customer's earlier
#: transactions, or the terminal's. A frame holding all of a customer's rows (or a
#: terminal's) gives that group's exact values, which is what lets it be split by entity.
FeatureGroup = Literal["transaction", "customer", "terminal"]
FEATURE_GROUPS: tuple[FeatureGroup, ...] = ("transaction", "customer", "terminal")

# Working columns of build_features; none reaches its output.
_DAY = "_day"
_CENTS = "_cents"
_ROW = "_row"
_ONE = "_one"
_VALUE_THROUGH_SELF = "_value_through_self"
_ROWS_THROUGH_TODAY = "_rows_through_today"
_KEY = "_entity_key"
_USABLE, _TICK, _BAND, _QUERY = "_usable_tick", "_tick", "_band", "_query"


def customer_nb_tx_column(window_days: int) -> str:
    return f"customer_nb_tx_{window_days}d"


def customer_avg_amount_column(window_days: int) -> str:
    return f"customer_avg_amount_{window_days}d"


def customer_amount_ratio_column(window_days: int) -> str:
    return f"customer_amount_ratio_{window_days}d"


def terminal_nb_tx_column(window_days: int) -> str:
    return f"terminal_nb_tx_{window_days}d"


def terminal_risk_column(window_days: int) -> str:
    return f"terminal_risk_{window_days}d"


def feature_columns(params: FeatureParams) -> list[str]:
    """Model input columns, in the order models are trained and served with."""
    return [column for group in FEATURE_GROUPS for column in group_columns(group, params)]


def group_columns(group: FeatureGroup, params: FeatureParams) -> list[str]:
    """The feature columns of one group, in `feature_columns` order."""
    if group == "transaction":
        return [TX_AMOUNT, TX_DURING_WEEKEND, TX_DURING_NIGHT]
    if group == "customer":
        names = (customer_nb_tx_column, customer_avg_amount_column, customer_amount_ratio_column)
        return [
            name(w)
            for w in params.customer_windows_days
            for name in names[: 3 if w in params.amount_ratio_windows_days else 2]
        ]
    return [
        name(w)
        for w in params.terminal_windows_days
        for name in (terminal_nb_tx_column, terminal_risk_column)
    ]


# --- the spec: which buckets each window reads ----------------------------------------------


def customer_window_days(window_days: int, day: int) -> range:
    """Days D-w+1 … D; on day D itself only transactions up to the current one count."""
    return range(day - window_days + 1, day + 1)


def customer_bucket_days(day: int, params: FeatureParams) -> range:
    """Customer buckets a transaction on ``day`` reads; older buckets are never read again."""
    return customer_window_days(max(params.customer_windows_days), day)


def terminal_window_ticks(window_days: int, params: FeatureParams) -> int:
    """Length of a terminal window in label ticks (`fraudops.features.label_timing`)."""
    return label_timing(params).day_ticks(window_days)


def terminal_bucket_ticks(tick: int, params: FeatureParams) -> range:
    """Terminal buckets (keyed by the tick their labels become usable) a reader at TICK reads.

    A w-day window holds the transactions whose labels became usable in the last w days of
    ticks: usable ticks TICK-W+1 … TICK. Older buckets are never read again; newer ones hold
    labels still to come and are read later.
    """
    longest = max(terminal_window_ticks(w, params) for w in params.terminal_windows_days)
    return range(tick - longest + 1, tick + 1)


# --- online: per-entity day buckets ---------------------------------------------------------


class CustomerBucket(NamedTuple):
    """One customer's transactions on one day, seen so far."""

    nb_tx: int = 0
    amount_cents: int = 0

    def with_transaction(self, amount_cents: int) -> CustomerBucket:
        return CustomerBucket(self.nb_tx + 1, self.amount_cents + amount_cents)


class TerminalBucket(NamedTuple):
    """One terminal's transactions whose labels become usable at one tick; ``nb_fraud`` grows
    as labels arrive."""

    nb_tx: int = 0
    nb_fraud: int = 0

    def with_transaction(self) -> TerminalBucket:
        return TerminalBucket(self.nb_tx + 1, self.nb_fraud)

    def with_fraud(self) -> TerminalBucket:
        return TerminalBucket(self.nb_tx, self.nb_fraud + 1)


Bucket = TypeVar("Bucket", CustomerBucket, TerminalBucket)


def day_number(timestamp: dt.datetime) -> int:
    """The calendar day (UTC) of a timestamp as days since 1970-01-01; naive means UTC."""
    return days_since_epoch(naive_utc(timestamp).date())


def amount_to_cents(amount: float) -> int:
    """Amounts carry two decimals; as integer cents their sums are exact in any order."""
    return round(amount * CENTS_PER_UNIT)


def terminal_bucket_key(tx_datetime: dt.datetime, params: FeatureParams) -> int:
    """The terminal bucket of a transaction: the tick its label becomes usable."""
    return label_timing(params).usable_tick(tx_datetime)


def prune(buckets: Mapping[int, Bucket], keep: range) -> dict[int, Bucket]:
    """Drop buckets older than ``keep``; newer ones stay (later transactions need them)."""
    return {key: bucket for key, bucket in buckets.items() if key >= keep.start}


def _total(buckets: Mapping[int, Bucket], days: range, empty: Bucket) -> tuple[int, int]:
    """Field-wise sums of the buckets of ``days``; a day without a bucket adds nothing."""
    present = [buckets.get(day, empty) for day in days]
    return sum(bucket[0] for bucket in present), sum(bucket[1] for bucket in present)


def customer_features(
    buckets: Mapping[int, CustomerBucket], day: int, amount_cents: int, params: FeatureParams
) -> dict[str, float]:
    """Customer features of a transaction from the buckets as they were just before it.

    The transaction itself is added here, so the caller records it only afterwards.
    """
    features: dict[str, float] = {}
    for w in params.customer_windows_days:
        nb_tx, cents = _total(buckets, customer_window_days(w, day), CustomerBucket())
        nb_tx, cents = nb_tx + 1, cents + amount_cents
        features[customer_nb_tx_column(w)] = float(nb_tx)
        features[customer_avg_amount_column(w)] = cents / (CENTS_PER_UNIT * nb_tx)
        if w in params.amount_ratio_windows_days:
            features[customer_amount_ratio_column(w)] = amount_ratio(amount_cents, nb_tx, cents)
    return features


def amount_ratio(amount_cents: int, nb_tx: int, window_cents: int) -> float:
    """The amount over the window's average, the transaction included: one exact division.

    A window whose amounts are all zero (the transaction's too) reads as an ordinary amount.
    """
    return amount_cents * nb_tx / window_cents if window_cents else 1.0


def terminal_features(
    buckets: Mapping[int, TerminalBucket], tick: int, params: FeatureParams
) -> dict[str, float]:
    """Terminal features of a transaction at label tick TICK: only usable labels are read.

    The buckets are walked, not the window's ticks: few buckets, hundreds of ticks.
    """
    features: dict[str, float] = {}
    timing = label_timing(params)
    for w in params.terminal_windows_days:
        length = timing.day_ticks(w)
        nb_tx = nb_fraud = 0
        for key, bucket in buckets.items():
            if 0 <= tick - key < length:
                nb_tx, nb_fraud = nb_tx + bucket.nb_tx, nb_fraud + bucket.nb_fraud
        features[terminal_nb_tx_column(w)] = float(nb_tx)
        features[terminal_risk_column(w)] = nb_fraud / nb_tx if nb_tx else 0.0
    return features


def transaction_features(
    tx_datetime: dt.datetime,
    tx_amount: float,
    customer_buckets: Mapping[int, CustomerBucket],
    terminal_buckets: Mapping[int, TerminalBucket],
    params: FeatureParams,
) -> dict[str, float]:
    """All model inputs of one incoming transaction, keyed and ordered as `feature_columns`."""
    timestamp = naive_utc(tx_datetime)
    day = day_number(timestamp)
    return {
        TX_AMOUNT: float(tx_amount),
        TX_DURING_WEEKEND: float(timestamp.isoweekday() in WEEKEND_ISO_WEEKDAYS),
        TX_DURING_NIGHT: float(timestamp.hour <= params.night_last_hour),
        **customer_features(customer_buckets, day, amount_to_cents(tx_amount), params),
        **terminal_features(terminal_buckets, label_timing(params).tick(timestamp), params),
    }


# --- offline: the whole frame at once -------------------------------------------------------
#
# Per entity, the transactions are sorted by (entity, transaction_id); then every window is a
# run of consecutive rows: the rows after the end of day D-k_old, up to the end of day D-k_new
# (terminals) or up to the transaction itself (customers). So each window total is the
# difference of two running totals, read at row positions. The position of "the end of day
# D-k" is the end of day D less a rolling count of the entity's rows on its last k days, over
# a key that orders like (entity, day). No group-by, no join, and days without transactions
# need no rows.


def build_features(raw: pl.DataFrame, params: FeatureParams) -> pl.DataFrame:
    """Features of every transaction in ``raw``, with its keys and label, by transaction_id."""
    return build_feature_groups(raw, params, FEATURE_GROUPS)


def build_feature_groups(
    raw: pl.DataFrame, params: FeatureParams, groups: Collection[FeatureGroup]
) -> pl.DataFrame:
    """The keys and the features of GROUPS of every transaction in ``raw``, by transaction_id.

    A customer (terminal) feature is exact for the customers (terminals) all of whose
    transactions ``raw`` holds: a partition of the data by entity gives the values the whole
    frame would.
    """
    transactions = (
        raw.lazy()
        .select(TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT, TX_FRAUD)
        .sort(TRANSACTION_ID)
        .with_columns(
            pl.col(TX_DATETIME).dt.date().cast(pl.Int32).alias(_DAY),
            (pl.col(TX_AMOUNT) * CENTS_PER_UNIT).round().cast(pl.Int64).alias(_CENTS),
        )
    )
    own_row = [pl.col(TX_AMOUNT), *_calendar_features(params)] if "transaction" in groups else []
    parts = [transactions.select(*KEY_COLUMNS, *own_row)]
    if "customer" in groups:
        parts.append(_customer_features(transactions, params))
    if "terminal" in groups:
        parts.append(_terminal_features(transactions, params))
    columns = [
        column
        for group in FEATURE_GROUPS
        if group in groups
        for column in group_columns(group, params)
    ]
    return (
        pl.concat(parts, how="horizontal")
        .select(*KEY_COLUMNS, pl.col(columns).cast(pl.Float64))
        .collect(engine="in-memory")
    )


def _calendar_features(params: FeatureParams) -> list[pl.Expr]:
    timestamp = pl.col(TX_DATETIME).dt
    return [
        timestamp.weekday().is_in(WEEKEND_ISO_WEEKDAYS).alias(TX_DURING_WEEKEND),
        (timestamp.hour() <= params.night_last_hour).alias(TX_DURING_NIGHT),
    ]


def _by_entity(
    transactions: pl.LazyFrame, entity: str, value: str, edges: set[int]
) -> pl.LazyFrame:
    """The rows sorted by entity, in transaction_id order, with running totals at day edges.

    For each k in ``edges`` it adds how many rows come up to the end of day D-k of the row's
    entity, D being the row's day, and the sum of ``value`` over those rows. The counts
    include the rows of earlier entities: they cancel out in every difference.
    """
    first_day, last_day = pl.col(_DAY).min(), pl.col(_DAY).max()
    # Keys of consecutive entities lie further apart than any window reaches back.
    span = (last_day - first_day + max(edges) + 1).cast(pl.Int64)
    key = pl.col(entity).rle_id().cast(pl.Int64) * span + (pl.col(_DAY) - first_day)
    day_ends_here = (pl.col(_KEY) != pl.col(_KEY).shift(-1)).fill_null(True)
    rows_through_today = pl.when(day_ends_here).then(_rows_through_self()).backward_fill()
    return (
        transactions.select(
            pl.int_range(pl.len(), dtype=pl.get_index_type()).alias(_ROW), entity, _DAY, value
        )
        .sort(entity, maintain_order=True)
        .with_columns(
            key.alias(_KEY),
            pl.lit(1, dtype=pl.Int64).alias(_ONE),
            pl.col(value).cast(pl.Int64).cum_sum().alias(_VALUE_THROUGH_SELF),
        )
        .with_columns(rows_through_today.alias(_ROWS_THROUGH_TODAY))
        .with_columns(
            (pl.col(_ROWS_THROUGH_TODAY) - pl.col(_ONE).rolling_sum_by(_KEY, f"{k}i")).alias(
                _rows(k)
            )
            for k in edges
        )
        .with_columns(
            pl.when(pl.col(_rows(k)) > 0)
            .then(pl.col(_VALUE_THROUGH_SELF).gather((pl.col(_rows(k)) - 1).clip(0)))
            .otherwise(0)
            .alias(_value(k))
            for k in edges
        )
    )


def _rows_through_self() -> pl.Expr:
    return pl.int_range(1, pl.len() + 1, dtype=pl.Int64)


def _rows(back: int) -> str:
    return f"_rows_through_{back}"  # back: days (customers) or ticks (terminals) before now


def _value(back: int) -> str:
    return f"_value_through_{back}"


def _in_transaction_order(by_entity: pl.LazyFrame, columns: list[pl.Expr]) -> pl.LazyFrame:
    return by_entity.select(_ROW, *columns).sort(_ROW).drop(_ROW)


def _customer_features(transactions: pl.LazyFrame, params: FeatureParams) -> pl.LazyFrame:
    """Rows after the end of day D-w, through the transaction itself."""
    by_customer = _by_entity(transactions, CUSTOMER_ID, _CENTS, set(params.customer_windows_days))
    columns = []
    for w in params.customer_windows_days:
        nb_tx = _rows_through_self() - pl.col(_rows(w))
        cents = pl.col(_VALUE_THROUGH_SELF) - pl.col(_value(w))
        columns += [
            nb_tx.alias(customer_nb_tx_column(w)),
            (cents / (nb_tx * CENTS_PER_UNIT)).alias(customer_avg_amount_column(w)),
        ]
        if w in params.amount_ratio_windows_days:
            ratio = pl.when(cents == 0).then(1.0).otherwise(pl.col(_CENTS) * nb_tx / cents)
            columns.append(ratio.alias(customer_amount_ratio_column(w)))
    return _in_transaction_order(by_customer, columns)


def _terminal_features(transactions: pl.LazyFrame, params: FeatureParams) -> pl.LazyFrame:
    """Per window of W ticks, the terminal's transactions whose labels became usable at ticks
    T-W+1 … T, T being the tick of the transaction (`fraudops.features.label_timing`).

    With rows sorted by (terminal, time), the rows usable by tick q are a prefix of the
    terminal's rows, found by an as-of join of q against the rows' keys. Keys of consecutive
    terminals lie further apart than any window reaches back.
    """
    timing = label_timing(params)
    lengths = {w: terminal_window_ticks(w, params) for w in params.terminal_windows_days}
    usable = timing.usable_tick_expr(pl.col(TX_DATETIME))
    reach = timing.delay_ticks + max(lengths.values()) + 2
    base = pl.col(_USABLE).min() - reach  # keys and queries count from here, all positive
    band = pl.col(TERMINAL_ID).rle_id().cast(pl.Int64) * (pl.col(_USABLE).max() - base + 1)
    by_terminal = (
        transactions.select(
            pl.int_range(pl.len(), dtype=pl.get_index_type()).alias(_ROW),
            TERMINAL_ID,
            TX_DATETIME,
            TX_FRAUD,
            usable.alias(_USABLE),
            timing.tick_expr(pl.col(TX_DATETIME)).alias(_TICK),
        )
        .sort(TX_DATETIME)  # ids need not be in time order; little work when they are
        # Sorting a copy keeps polars from merging both sorts into a 3x slower two-key sort.
        .with_columns(pl.col(TERMINAL_ID).alias(_BAND))
        .sort(_BAND, maintain_order=True)
        .with_columns((band - base).alias(_BAND))
        .cache()  # read by every join below: sort once
    )
    rows = by_terminal.select(
        (pl.col(_BAND) + pl.col(_USABLE)).alias(_KEY),
        _rows_through_self().alias(_rows(0)),
        pl.col(TX_FRAUD).cast(pl.Int64).cum_sum().alias(_value(0)),
    )
    through = {back: _usable_through(by_terminal, rows, back) for back in {0, *lengths.values()}}
    columns = []
    for w, length in lengths.items():
        nb_tx = pl.col(_rows(0)) - pl.col(_rows(length))
        nb_fraud = pl.col(_value(0)) - pl.col(_value(length))
        columns += [
            nb_tx.alias(terminal_nb_tx_column(w)),
            pl.when(nb_tx > 0).then(nb_fraud / nb_tx).otherwise(0.0).alias(terminal_risk_column(w)),
        ]
    counts = pl.concat([by_terminal.select(_ROW), *through.values()], how="horizontal")
    return _in_transaction_order(counts, columns)


def _usable_through(by_terminal: pl.LazyFrame, rows: pl.LazyFrame, back: int) -> pl.LazyFrame:
    """Per row: how many rows, and frauds, come up to the last one usable at tick T - BACK."""
    query = by_terminal.select((pl.col(_BAND) + pl.col(_TICK) - back).alias(_QUERY))
    found = query.join_asof(rows, left_on=_QUERY, right_on=_KEY, strategy="backward")
    return found.select(
        pl.col(_rows(0)).fill_null(0).alias(_rows(back)),
        pl.col(_value(0)).fill_null(0).alias(_value(back)),
    )
