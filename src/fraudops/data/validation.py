"""Reject bad data before it reaches a model: raw transaction batches and feature frames.

A batch is judged in three passes, each reporting every rule it finds broken: the schema
(missing or mistyped columns, here), the rows (`fraudops.data.row_rules`, on the columns
that passed), and the batch as a whole (empty, fraud rate, here). Raw files are judged on
their footers before any row is read (``check_raw_files``). Whatever fails is raised
together as one `BatchRejected` (`fraudops.data.rejection`).

A pandera schema was the other candidate; it was left out because it still runs value
checks on a column whose dtype is already wrong (turning one problem into a crash report),
counts NaN as null, and reports failing values rather than rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from fraudops.config import FeatureParams
from fraudops.data.rejection import MAX_EXAMPLES, BatchRejected, RuleFailure
from fraudops.data.row_rules import (
    RAW_BATCH_SCHEMA,
    feature_row_rules,
    raw_row_rules,
    row_failures,
)
from fraudops.data.schema import RAW_SCHEMA, TRANSACTION_ID, TX_FRAUD
from fraudops.features.definitions import feature_columns
from fraudops.timestamps import naive_utc, naive_utc_now

# BatchRejected is named here too: callers catch it where they call the validation.
__all__ = ["BatchRejected", "check_raw_files", "validate_features", "validate_raw"]


def validate_raw(
    batch: pl.DataFrame, *, max_fraud_rate: float, now: dt.datetime | None = None
) -> None:
    """Raise BatchRejected naming every rule the raw batch breaks.

    Integer columns are accepted at any integer width (a Parquet reader or writer may
    widen Int8 labels, for instance): the value rules still catch bad values, and nothing is
    cast here. Naive timestamps are taken as UTC, like ``now`` when it is naive.
    """
    now = naive_utc_now() if now is None else naive_utc(now)
    usable = _usable_columns(batch, RAW_BATCH_SCHEMA)
    failures = _schema_failures(batch, RAW_BATCH_SCHEMA)
    failures += row_failures(batch, raw_row_rules(batch, usable, now))
    failures += _batch_failures(batch, usable, max_fraud_rate)
    if failures:
        raise BatchRejected(failures)


def validate_features(features: pl.DataFrame, params: FeatureParams) -> None:
    """Raise BatchRejected naming every rule the feature frame breaks."""
    expected = {TRANSACTION_ID: pl.Int64(), **dict.fromkeys(feature_columns(params), pl.Float64())}
    usable = _usable_columns(features, expected)
    failures = _schema_failures(features, expected)
    failures += row_failures(features, feature_row_rules(features, usable, params))
    if failures:
        raise BatchRejected(failures)


#: The rules judged on a raw file's footer, before any of its rows is read.
FILE_RULES = {
    "unreadable_file": "files must be readable Parquet files",
    "missing_columns": "files must hold every raw column",
    "wrong_dtypes": "files must store each column with its type",
}


def check_raw_files(files: Sequence[Path]) -> None:
    """Raise BatchRejected naming every file that cannot be read as raw transactions.

    Only each file's footer is read, before any row. A 0-byte, truncated or non-Parquet
    file, a file without a raw column, or one storing a column with another type would
    otherwise fail deep inside the reader, which selects the raw columns first: a Polars
    traceback instead of the rule and the file to fix.
    """
    found: dict[str, list[dict[str, str]]] = {rule: [] for rule in FILE_RULES}
    for path in files:
        for rule, example in _file_problems(path):
            found[rule].append(example)
    failures = [
        RuleFailure(rule, FILE_RULES[rule], len(examples), tuple(examples[:MAX_EXAMPLES]), "file")
        for rule, examples in found.items()
        if examples
    ]
    if failures:
        raise BatchRejected(failures)


def _file_problems(path: Path) -> list[tuple[str, dict[str, str]]]:
    """The file rules PATH breaks, each with an example that names the file."""
    try:
        schema = pl.read_parquet_schema(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        return [("unreadable_file", {"file": str(path), "error": str(exc).splitlines()[0]})]
    absent = ", ".join(column for column in RAW_SCHEMA if column not in schema)
    wrong = "; ".join(_mistyped(schema, RAW_SCHEMA))
    problems = (("missing_columns", absent), ("wrong_dtypes", wrong))
    return [(rule, {"file": str(path), "columns": text}) for rule, text in problems if text]


def _mistyped(schema: Mapping[str, pl.DataType], expected: Mapping[str, pl.DataType]) -> list[str]:
    return [
        f"{column} is {schema[column]}, not {dtype}"
        for column, dtype in expected.items()
        if column in schema and not _dtype_accepted(dtype, schema[column])
    ]


# --- schema and batch ------------------------------------------------------------------------


def _dtype_accepted(expected: pl.DataType, found: pl.DataType) -> bool:
    return found == expected or (expected.is_integer() and found.is_integer())


def _usable_columns(frame: pl.DataFrame, expected: Mapping[str, pl.DataType]) -> set[str]:
    return {
        column
        for column, dtype in expected.items()
        if column in frame.schema and _dtype_accepted(dtype, frame.schema[column])
    }


def _schema_failures(frame: pl.DataFrame, expected: Mapping[str, pl.DataType]) -> list[RuleFailure]:
    missing = [column for column in expected if column not in frame.schema]
    mistyped = [
        column
        for column in expected
        if column in frame.schema and not _dtype_accepted(expected[column], frame.schema[column])
    ]
    failures = []
    if missing:
        failures.append(
            RuleFailure(
                "missing_columns",
                "required columns are absent: " + ", ".join(missing),
                None,
                tuple(
                    {"column": column, "expected": str(expected[column])}
                    for column in missing[:MAX_EXAMPLES]
                ),
            )
        )
    if mistyped:
        failures.append(
            RuleFailure(
                "wrong_dtypes",
                "columns have the wrong type (nothing is cast): " + ", ".join(mistyped),
                None,
                tuple(
                    {
                        "column": column,
                        "expected": str(expected[column]),
                        "found": str(frame.schema[column]),
                    }
                    for column in mistyped[:MAX_EXAMPLES]
                ),
            )
        )
    return failures


def _batch_failures(
    batch: pl.DataFrame, usable: set[str], max_fraud_rate: float
) -> list[RuleFailure]:
    if batch.is_empty():
        return [RuleFailure("empty_batch", "the batch has no rows", None, ({"rows": 0},))]
    if TX_FRAUD not in usable:
        return []
    frauds = int(batch.select((pl.col(TX_FRAUD) == 1).sum()).item())
    rate = frauds / batch.height
    summary = ({"rows": batch.height, "frauds": frauds, "fraud_rate": round(rate, 6)},)
    if frauds == 0:
        return [
            RuleFailure(
                "zero_fraud_rate",
                "no transaction is labelled fraud, so a model cannot learn or be evaluated",
                None,
                summary,
            )
        ]
    if rate > max_fraud_rate:
        return [
            RuleFailure(
                "fraud_rate_above_max",
                f"fraud rate {rate:.4f} is above max_fraud_rate {max_fraud_rate}",
                None,
                summary,
            )
        ]
    return []
