"""The online store's vocabulary: what callers pass and get back, and what backends exchange.

Kept apart from `fraudops.features.online_store` (the interface) and its backends so that a
caller that only names a type (serving's schemas, its error mapping) does not pull in a
backend, and so that each backend and the backfill can share the records below without
importing one another. Plain data only: no behaviour lives here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from fraudops.features.definitions import CustomerBucket, TerminalBucket

#: Prefix of every Redis key, so several stores can share one Redis database.
DEFAULT_NAMESPACE = "fraudops"

# --- the public types ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transaction:
    """One incoming transaction; a naive ``tx_datetime`` is UTC."""

    transaction_id: int
    tx_datetime: dt.datetime
    customer_id: int
    terminal_id: int
    tx_amount: float


class LabelOutcome(StrEnum):
    """What `OnlineStore.record_label` did; serving maps ``UNKNOWN_TRANSACTION`` to 404."""

    #: Stored: the fraud counts from the hour its label becomes usable (label timing).
    RECORDED = "recorded"
    #: Stored, but after it had become usable: features served in between did not include
    #: it, so they differ from the offline features of the same transactions.
    RECORDED_LATE = "recorded_late"
    #: The same label was already stored; nothing changed.
    UNCHANGED = "unchanged"
    #: No such transaction in the index: never scored here, or expired from the index.
    UNKNOWN_TRANSACTION = "unknown_transaction"


class OnlineStoreError(RuntimeError):
    """The online store could not do what was asked."""


class OnlineStoreUnavailable(OnlineStoreError):
    """The backend (SQLite file or Redis server) cannot be reached or used."""


class TransactionConflict(OnlineStoreError):
    """A transaction id came back with a different customer, terminal, time or amount."""


@dataclass(frozen=True)
class BackfillSummary:
    """What `OnlineStore.backfill` wrote: state as of the end of ``until``."""

    until: dt.date
    transactions: int
    customer_buckets: int
    terminal_buckets: int
    indexed_transactions: int
    pending_labels: int


# --- what the interface and its backends pass each other ----------------------------------


class IndexEntry(NamedTuple):
    """What the index remembers of a scored transaction; ``label`` None means not yet known.

    ``day`` keys the customer bucket, ``usable_tick`` the terminal bucket (the label tick of
    `fraudops.features.label_timing`): the label path adds a fraud to that bucket.
    """

    customer_id: int
    terminal_id: int
    day: int
    usable_tick: int
    amount_cents: int
    label: int | None


@dataclass(frozen=True, slots=True)
class BucketPlan:
    """The buckets one call reads, and from which key on buckets must be kept.

    Customer buckets are keyed by day, terminal buckets by the tick their labels become
    usable (`fraudops.features.label_timing`).
    """

    day: int
    customer_days: range
    terminal_ticks: range
    customer_keep_from: int
    terminal_keep_from: int


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one exchange read from the backend, as it was before the call counted anything."""

    customer: dict[int, CustomerBucket]
    terminal: dict[int, TerminalBucket]
    #: The index entry of an earlier call with the same transaction id, if any.
    previous: IndexEntry | None
