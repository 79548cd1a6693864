"""Offline features on a Dask cluster, equal row for row to `build_features` in one process.

A customer feature reads only that customer's transactions, a terminal feature only that
terminal's. So the transactions are split twice: by customer id for the customer features
and by terminal id for the terminal ones (with the per-transaction features, which read no
other row). Each part runs the one definition, `build_feature_groups`, on a worker; the two
results are put side by side in transaction id order. Nothing about a feature is written twice.

The client reads the raw data and sends the parts: the workers need no access to its files.
It also holds the result, so its memory is what limits the data size: the parts carry only
the columns the features read, the workers send back only the columns the result keeps, and
each part list is dropped once sent. Each half is sorted on its own and the halves are
stacked (transaction ids are unique, `fraudops.data.validation`, so the sorted halves line
up), which at 10x the default data needs about half the memory of a join and a sort
(docs/scaling.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from fraudops.config import FeatureParams
from fraudops.data.schema import (
    CUSTOMER_ID,
    TERMINAL_ID,
    TRANSACTION_ID,
    TX_AMOUNT,
    TX_DATETIME,
    TX_FRAUD,
)
from fraudops.features.definitions import (
    KEY_COLUMNS,
    FeatureGroup,
    build_feature_groups,
    feature_columns,
    group_columns,
)
from fraudops.scale.cluster import worker_count

if TYPE_CHECKING:
    from distributed import Client

#: What each split computes: the groups whose rows of one entity it keeps together.
_CUSTOMER_GROUPS: tuple[FeatureGroup, ...] = ("customer",)
_TERMINAL_GROUPS: tuple[FeatureGroup, ...] = ("transaction", "terminal")
#: The raw columns `build_feature_groups` reads: the others are not sent to the workers.
_INPUT_COLUMNS = (TRANSACTION_ID, TX_DATETIME, CUSTOMER_ID, TERMINAL_ID, TX_AMOUNT, TX_FRAUD)


def build_features_on_dask(
    client: Client, raw: pl.DataFrame, params: FeatureParams, parts: int | None = None
) -> pl.DataFrame:
    """`build_features` of RAW, computed in PARTS pieces per entity (default: one per worker)."""
    count = parts or worker_count(client)
    inputs = raw.select(_INPUT_COLUMNS)
    by_terminal = _run(
        client,
        split_by_entity(inputs, TERMINAL_ID, count),
        params,
        _TERMINAL_GROUPS,
        [*KEY_COLUMNS, *group_columns("transaction", params), *group_columns("terminal", params)],
    )
    by_customer = _run(
        client,
        split_by_entity(inputs, CUSTOMER_ID, count),
        params,
        _CUSTOMER_GROUPS,
        [TRANSACTION_ID, *group_columns("customer", params)],
    )
    features = by_terminal.hstack(by_customer.drop(TRANSACTION_ID).get_columns())
    return features.select(*KEY_COLUMNS, *feature_columns(params))


def split_by_entity(raw: pl.DataFrame, entity: str, parts: int) -> list[pl.DataFrame]:
    """RAW in at most PARTS frames, each holding every row of its entities (id modulo PARTS)."""
    part = (pl.col(entity) % parts).alias("_part")
    return raw.with_columns(part).partition_by("_part", include_key=False)


def feature_part(
    frame: pl.DataFrame, params: FeatureParams, groups: tuple[FeatureGroup, ...], keep: list[str]
) -> pl.DataFrame:
    """What a worker computes for one part: GROUPS of FRAME, only the columns KEEP names."""
    return build_feature_groups(frame, params, groups).select(keep)


def _run(
    client: Client,
    frames: list[pl.DataFrame],
    params: FeatureParams,
    groups: tuple[FeatureGroup, ...],
    keep: list[str],
) -> pl.DataFrame:
    """KEEP of GROUPS of every frame, each on a worker, back as one frame by transaction id.

    FRAMES is emptied once sent, so the client holds its rows only on the workers.
    """
    sent = client.scatter(frames)  # type: ignore[no-untyped-call]
    frames.clear()
    done = client.map(feature_part, sent, params=params, groups=groups, keep=keep)
    computed: list[pl.DataFrame] = client.gather(done)  # type: ignore[no-untyped-call]
    return pl.concat(computed, rechunk=False).sort(TRANSACTION_ID)
