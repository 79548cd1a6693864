"""Column names and dtypes of raw transactions: the one place they are spelled out.

Every other module imports these names instead of repeating string literals, so a
renamed column is a one-line change.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

#: Day numbers count whole days since this date, as Polars stores a Date; transaction
#: ids and the feature windows are built on them.
EPOCH = dt.date(1970, 1, 1)


def days_since_epoch(day: dt.date) -> int:
    return (day - EPOCH).days


TRANSACTION_ID = "transaction_id"
TX_DATETIME = "tx_datetime"
CUSTOMER_ID = "customer_id"
TERMINAL_ID = "terminal_id"
TX_AMOUNT = "tx_amount"
TX_FRAUD = "tx_fraud"
TX_FRAUD_SCENARIO = "tx_fraud_scenario"

#: Raw transaction columns in storage order, with their Polars dtypes.
RAW_SCHEMA: dict[str, pl.DataType] = {
    TRANSACTION_ID: pl.Int64(),
    TX_DATETIME: pl.Datetime("us"),
    CUSTOMER_ID: pl.Int64(),
    TERMINAL_ID: pl.Int64(),
    TX_AMOUNT: pl.Float64(),
    TX_FRAUD: pl.Int8(),
    TX_FRAUD_SCENARIO: pl.Int8(),
}

#: Hive-style partition key of the raw Parquet layout: data/raw/day=YYYY-MM-DD/part-0.parquet
PARTITION_KEY = "day"

#: Fraud scenario codes stored in TX_FRAUD_SCENARIO (0 means genuine).
SCENARIO_GENUINE = 0
SCENARIO_HIGH_AMOUNT = 1
SCENARIO_COMPROMISED_TERMINAL = 2
SCENARIO_COMPROMISED_CUSTOMER = 3
SCENARIO_NIGHT_SMALL_AMOUNT = 4  # only in the `new_fraud_pattern` drift scenario
