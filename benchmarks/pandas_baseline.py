"""The project's features written the way a data scientist would in pandas.

Customer windows: per customer and day the transactions are aggregated, each window is a
time-based ``groupby().rolling()`` over those daily rows, and the result is merged back.
Terminal windows: running totals per terminal and label-usable hour, read with as-of merges.
It computes the same definitions as ``fraudops.features.definitions.build_features``
(docs/features.md) with the same integer-cents arithmetic, so the benchmark can demand
identical values.
"""

from __future__ import annotations

import pandas as pd

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
    CENTS_PER_UNIT,
    KEY_COLUMNS,
    TX_DURING_NIGHT,
    TX_DURING_WEEKEND,
    customer_avg_amount_column,
    customer_nb_tx_column,
    feature_columns,
    terminal_nb_tx_column,
    terminal_risk_column,
)

SATURDAY = 5  # pandas numbers weekdays from Monday = 0


def pandas_features(raw: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """Features of every transaction, sorted by transaction_id, as `build_features` returns."""
    tx = raw.sort_values(TRANSACTION_ID, ignore_index=True)
    tx["date"] = tx[TX_DATETIME].dt.normalize()
    tx["cents"] = (tx[TX_AMOUNT] * CENTS_PER_UNIT).round().astype("int64")
    tx[TX_DURING_WEEKEND] = tx[TX_DATETIME].dt.dayofweek >= SATURDAY
    tx[TX_DURING_NIGHT] = tx[TX_DATETIME].dt.hour <= params.night_last_hour
    tx = _customer_features(tx, params)
    tx = _terminal_features(tx, params)
    columns = feature_columns(params)
    out = tx[[*KEY_COLUMNS, *columns]].copy()
    out[columns] = out[columns].astype("float64")
    return out


def _rolling_sums(daily: pd.DataFrame, entity: str, days: int) -> pd.DataFrame:
    """Sums over the `days` calendar days ending on each daily row's date, row for row.

    `daily` is sorted by (entity, date), the order groupby-rolling returns its rows in.
    """
    rolled = daily.groupby(entity).rolling(f"{days}D", on="date")[["nb", "total"]].sum()
    return rolled.astype("int64").set_axis(daily.index)


def _customer_features(tx: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    daily = tx.groupby([CUSTOMER_ID, "date"], as_index=False).agg(
        nb=("cents", "size"), total=("cents", "sum")
    )
    for w in params.customer_windows_days:
        rolled = _rolling_sums(daily, CUSTOMER_ID, w)
        daily[f"nb_{w}"], daily[f"cents_{w}"] = rolled["nb"], rolled["total"]
    tx = tx.merge(daily, on=[CUSTOMER_ID, "date"], how="left")
    same_day = tx.groupby([CUSTOMER_ID, "date"])
    later_nb = tx["nb"] - (same_day.cumcount() + 1)
    later_cents = tx["total"] - same_day["cents"].cumsum()
    for w in params.customer_windows_days:
        nb = tx[f"nb_{w}"] - later_nb
        tx[customer_nb_tx_column(w)] = nb
        tx[customer_avg_amount_column(w)] = (tx[f"cents_{w}"] - later_cents) / (nb * CENTS_PER_UNIT)
    return tx.drop(columns=[c for c in daily.columns if c not in (CUSTOMER_ID, "date")])


def _terminal_features(tx: pd.DataFrame, params: FeatureParams) -> pd.DataFrame:
    """Transactions whose labels became usable in the w days up to the reader's hour.

    A label is usable from the first whole hour at or after the transaction plus the delay
    (`fraudops.features.label_timing`); a reader at t stands on t's hour. Per terminal and
    usable hour the rows and frauds are counted and summed up; each reader looks up the
    running totals at its hour and w days earlier with an as-of merge.
    """
    delay = pd.Timedelta(days=params.label_delay_days)
    usable = tx[TX_DATETIME].dt.ceil("h") + delay
    hourly = (
        tx.assign(usable=usable)
        .groupby([TERMINAL_ID, "usable"], as_index=False)
        .agg(nb=(TX_FRAUD, "size"), total=(TX_FRAUD, "sum"))
    )
    by_terminal = hourly.groupby(TERMINAL_ID)
    hourly["nb"], hourly["total"] = by_terminal["nb"].cumsum(), by_terminal["total"].cumsum()
    hourly = hourly.sort_values("usable", kind="stable")
    readers = pd.DataFrame({TERMINAL_ID: tx[TERMINAL_ID], "hour": tx[TX_DATETIME].dt.floor("h")})
    readers["row"] = range(len(readers))
    for back in {0, *params.terminal_windows_days}:
        query = readers.assign(at=readers["hour"] - pd.Timedelta(days=back)).sort_values("at")
        found = pd.merge_asof(
            query, hourly, left_on="at", right_on="usable", by=TERMINAL_ID, direction="backward"
        ).sort_values("row")
        readers[f"nb_{back}"] = found["nb"].fillna(0).astype("int64").to_numpy()
        readers[f"total_{back}"] = found["total"].fillna(0).astype("int64").to_numpy()
    for w in params.terminal_windows_days:
        nb = readers["nb_0"] - readers[f"nb_{w}"]
        frauds = readers["total_0"] - readers[f"total_{w}"]
        tx[terminal_nb_tx_column(w)] = nb.to_numpy()
        tx[terminal_risk_column(w)] = (frauds / nb).where(nb > 0, 0.0).to_numpy()
    return tx
