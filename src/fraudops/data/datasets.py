"""The raw data layout: one Parquet file per day, ``<root>/day=YYYY-MM-DD/part-0.parquet``.

Day partitions make a new batch of days an append (new folders, nothing rewritten), let
DVC store unchanged days once across versions, and let validation check a batch day by
day. Files are written so their bytes depend only on the rows: same data, same DVC hash.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path
from typing import Final

import polars as pl

from fraudops.data.schema import PARTITION_KEY, RAW_SCHEMA, TRANSACTION_ID, TX_DATETIME
from fraudops.data.validation import check_raw_files

PART_FILE = "part-0.parquet"
PARTITION_PREFIX = f"{PARTITION_KEY}="

# Fixed writer settings: changing any of them changes every file's bytes (and DVC hash).
_COMPRESSION: Final = "zstd"
_COMPRESSION_LEVEL = 3
_ROW_GROUP_SIZE = 1_000_000


def partition_dir(root: Path, day: dt.date) -> Path:
    return root / f"{PARTITION_PREFIX}{day.isoformat()}"


def write_raw(df: pl.DataFrame, out_dir: Path, *, overwrite: bool = False) -> list[Path]:
    """Write each day of ``df`` (by ``tx_datetime``) to its partition; return the files.

    Refuses, before writing anything, when a day's partition already exists, so a batch
    never silently replaces data; ``overwrite=True`` replaces those partitions whole.
    Rows are stored sorted by transaction id, so row order in ``df`` does not matter.
    """
    raw = _select_raw(df)
    if raw.is_empty():
        raise ValueError("no transactions to write")
    days = raw[TX_DATETIME].dt.date().alias(PARTITION_KEY)
    partitions = raw.with_columns(days).partition_by(PARTITION_KEY, as_dict=True)
    targets = {key[0]: partition_dir(out_dir, key[0]) for key in sorted(partitions)}
    existing = [path for path in targets.values() if path.exists()]
    if existing and not overwrite:
        names = ", ".join(path.name for path in existing[:5])
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        raise FileExistsError(f"{len(existing)} day(s) already in {out_dir}: {names}{more}")
    return [
        _write_partition(partitions[(day,)].drop(PARTITION_KEY), path)
        for day, path in targets.items()
    ]


def _select_raw(df: pl.DataFrame) -> pl.DataFrame:
    missing = [name for name in RAW_SCHEMA if name not in df.columns]
    if missing:
        raise ValueError(f"raw transactions lack columns {missing}")
    raw = df.select(list(RAW_SCHEMA))
    wrong = {name: str(dtype) for name, dtype in raw.schema.items() if dtype != RAW_SCHEMA[name]}
    if wrong:
        raise ValueError(f"raw columns with the wrong dtype: {wrong}")
    return raw


def _write_partition(rows: pl.DataFrame, directory: Path) -> Path:
    """Write through a temporary file so a crash never leaves a truncated partition."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    target = directory / PART_FILE
    partial = directory / f".{PART_FILE}.partial"
    rows.sort(TRANSACTION_ID).write_parquet(
        partial,
        compression=_COMPRESSION,
        compression_level=_COMPRESSION_LEVEL,
        row_group_size=_ROW_GROUP_SIZE,
        statistics=True,
    )
    os.replace(partial, target)
    return target


def read_raw(path: Path) -> pl.DataFrame:
    """Raw columns plus ``day`` (from each partition's name), sorted by transaction id.

    ``path`` is a root of day partitions or one ``day=…`` partition. ``day`` comes from
    where a row is stored, not from its timestamp, so validation can catch a row filed
    under the wrong day.

    Every file is checked before any row is read: one that is not Parquet, lacks a raw
    column or stores one with another type raises ``BatchRejected`` naming the rule and
    the file. Files may store an integer column at different widths (validation accepts
    any): they are read at the widest.
    """
    partitions = _partitions(path)
    check_raw_files([file for _, files in partitions for file in files])
    scans = [
        pl.scan_parquet(file)
        .select(list(RAW_SCHEMA))
        .with_columns(pl.lit(day, dtype=pl.Date).alias(PARTITION_KEY))
        for day, files in partitions
        for file in files
    ]
    return pl.concat(scans, how="vertical_relaxed").sort(TRANSACTION_ID).collect()


def check_raw(path: Path) -> None:
    """Raise BatchRejected naming each file under PATH that ``read_raw`` could not read.

    Reads only the files' footers, so a flow can check data it will read later (retraining
    checks ``data/raw`` before adding a batch to it) in milliseconds.
    """
    check_raw_files([file for _, files in _partitions(path) for file in files])


def _partitions(path: Path) -> list[tuple[dt.date, list[Path]]]:
    if not path.is_dir():
        raise FileNotFoundError(f"no raw data folder at {path}")
    directories = [path] if path.name.startswith(PARTITION_PREFIX) else sorted(path.iterdir())
    partitions = [
        (_partition_day(directory), _partition_files(directory))
        for directory in directories
        if directory.is_dir() and directory.name.startswith(PARTITION_PREFIX)
    ]
    if not partitions:
        raise FileNotFoundError(f"no {PARTITION_PREFIX}YYYY-MM-DD partitions in {path}")
    return partitions


def _partition_day(directory: Path) -> dt.date:
    text = directory.name.removeprefix(PARTITION_PREFIX)
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        day = None
    if day is None or day.isoformat() != text:
        raise ValueError(f"partition {directory} is not named {PARTITION_PREFIX}YYYY-MM-DD")
    return day


def _partition_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"partition {directory} holds no Parquet file")
    return files
