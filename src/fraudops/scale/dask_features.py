"""Offline features on a Dask cluster, equal row for row to `build_features` in one process.

A customer feature reads only that customer's transactions, a terminal feature only that
terminal's. So the transactions are split twice: by customer id for the customer features
and by terminal id for the terminal ones (with the per-transaction features, which read no
other row). Each part runs the one definition, `build_feature_groups`, on a worker; the two
results are joined back by transaction id. Nothing about a feature is written twice.

The client reads the raw data and sends the parts: the workers need no access to its files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import polars as pl

from fraudops.config import FeatureParams
from fraudops.data.schema import CUSTOMER_ID, TERMINAL_ID, TRANSACTION_ID
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


def build_features_on_dask(
    client: Client, raw: pl.DataFrame, params: FeatureParams, parts: int | None = None
) -> pl.DataFrame:
    """`build_features` of RAW, computed in PARTS pieces per entity (default: one per worker)."""
    count = parts or worker_count(client)
    by_customer = _run(client, split_by_entity(raw, CUSTOMER_ID, count), params, _CUSTOMER_GROUPS)
    by_terminal = _run(client, split_by_entity(raw, TERMINAL_ID, count), params, _TERMINAL_GROUPS)
    customer_columns = [TRANSACTION_ID, *group_columns("customer", params)]
    return (
        by_terminal.join(by_customer.select(customer_columns), on=TRANSACTION_ID, how="inner")
        .select(*KEY_COLUMNS, *feature_columns(params))
        .sort(TRANSACTION_ID)
    )


def split_by_entity(raw: pl.DataFrame, entity: str, parts: int) -> list[pl.DataFrame]:
    """RAW in at most PARTS frames, each holding every row of its entities (id modulo PARTS)."""
    part = (pl.col(entity) % parts).alias("_part")
    return raw.with_columns(part).partition_by("_part", include_key=False)


def _run(
    client: Client,
    frames: list[pl.DataFrame],
    params: FeatureParams,
    groups: tuple[FeatureGroup, ...],
) -> pl.DataFrame:
    """GROUPS of every frame, each on a worker, back as one frame."""
    sent = client.scatter(frames)  # type: ignore[no-untyped-call]
    done = client.map(build_feature_groups, sent, params=params, groups=groups)
    computed: list[pl.DataFrame] = client.gather(done)  # type: ignore[no-untyped-call]
    return pl.concat(computed)
