"""Raw files that cannot be read are rejected by rule and path before any row is read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from fraudops.config import SimulateParams
from fraudops.data.datasets import PART_FILE, read_raw, write_raw
from fraudops.data.schema import TX_AMOUNT, TX_DATETIME, TX_FRAUD
from fraudops.data.simulate import simulate
from fraudops.data.validation import BatchRejected

pytestmark = pytest.mark.data

SMALL = SimulateParams(customers=50, terminals=100, days=3, seed=5)


@pytest.fixture(scope="module")
def transactions() -> pl.DataFrame:
    return simulate(SMALL)


@pytest.fixture
def raw_dir(transactions: pl.DataFrame, tmp_path: Path) -> Path:
    write_raw(transactions, tmp_path / "raw")
    return tmp_path / "raw"


def first_file(raw_dir: Path) -> Path:
    return sorted(raw_dir.glob(f"day=*/{PART_FILE}"))[0]


def rewrite(path: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    change(pl.read_parquet(path)).write_parquet(path)


BREAKAGES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "0-byte file": ("unreadable_file", lambda path: path.write_bytes(b"")),
    "CSV named .parquet": ("unreadable_file", lambda path: path.write_text("a,b\n1,2\n")),
    "truncated file": ("unreadable_file", lambda path: path.write_bytes(path.read_bytes()[:100])),
    "column missing": ("missing_columns", lambda path: rewrite(path, lambda f: f.drop(TX_AMOUNT))),
    "column of another type": (
        "wrong_dtypes",
        lambda path: rewrite(path, lambda f: f.with_columns(pl.col(TX_AMOUNT).cast(pl.String))),
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_file_that_cannot_be_read_is_rejected_naming_the_rule_and_the_file(
    raw_dir: Path, breakage: str
) -> None:
    rule, breaks = BREAKAGES[breakage]
    broken = first_file(raw_dir)
    breaks(broken)

    with pytest.raises(BatchRejected) as rejected:
        read_raw(raw_dir)

    assert rejected.value.rules == [rule]
    assert f"file={broken}" in str(rejected.value)
    assert "(1 file)" in str(rejected.value)


def test_every_broken_file_is_reported_at_once(raw_dir: Path) -> None:
    first, second, _ = sorted(raw_dir.glob(f"day=*/{PART_FILE}"))
    first.write_bytes(b"")
    rewrite(second, lambda frame: frame.drop(TX_DATETIME))

    with pytest.raises(BatchRejected) as rejected:
        read_raw(raw_dir)

    assert rejected.value.rules == ["unreadable_file", "missing_columns"]
    assert str(first) in str(rejected.value) and str(second) in str(rejected.value)


def test_files_storing_an_integer_column_at_other_widths_read_together(
    raw_dir: Path, transactions: pl.DataFrame
) -> None:
    """Validation accepts any integer width, so the reader must not choke on a mix."""
    rewrite(first_file(raw_dir), lambda frame: frame.with_columns(pl.col(TX_FRAUD).cast(pl.Int64)))

    back = read_raw(raw_dir)

    assert back.height == transactions.height
    assert back[TX_FRAUD].sum() == transactions[TX_FRAUD].sum()
