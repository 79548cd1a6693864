"""The calendar-day features written the way a data scientist would in pandas.

Per entity and day the transactions are aggregated, each window is a time-based
``groupby().rolling()`` over those daily rows, and the result is merged back. It computes
the same definitions as ``fraudops.features.definitions.build_features`` (docs/features.md) with the
same integer-cents arithmetic, so the benchmark can demand identical values.
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
    """Days D-d-w+1 … D-d as the last d+w days through D less the last d days."""
    daily = tx.groupby([TERMINAL_ID, "date"], as_index=False).agg(
        nb=(TX_FRAUD, "size"), total=(TX_FRAUD, "sum")
    )
    delay = params.label_delay_days
    recent = _rolling_sums(daily, TERMINAL_ID, delay)
    for w in params.terminal_windows_days:
        window = _rolling_sums(daily, TERMINAL_ID, delay + w) - recent
        nb = window["nb"]
        daily[terminal_nb_tx_column(w)] = nb
        daily[terminal_risk_column(w)] = (window["total"] / nb).where(nb > 0, 0.0)
    return tx.merge(daily.drop(columns=["nb", "total"]), on=[TERMINAL_ID, "date"], how="left")
