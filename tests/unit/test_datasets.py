"""The day-partitioned raw layout: round trip, byte determinism, appends and refusals."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import polars as pl
import pytest

from fraudops.config import SimulateParams
from fraudops.data.datasets import PART_FILE, partition_dir, read_raw, write_raw
from fraudops.data.schema import PARTITION_KEY, RAW_SCHEMA, TRANSACTION_ID, TX_AMOUNT, TX_DATETIME
from fraudops.data.simulate import simulate

pytestmark = pytest.mark.data

SMALL = SimulateParams(customers=200, terminals=400, days=10, seed=5)


@pytest.fixture(scope="module")
def transactions() -> pl.DataFrame:
    return simulate(SMALL)


def digests(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_writes_one_file_per_day_in_hive_layout(transactions, tmp_path):
    files = write_raw(transactions, tmp_path)
    expected = [
        tmp_path / f"{PARTITION_KEY}={SMALL.start + dt.timedelta(days=i)}" / PART_FILE
        for i in range(SMALL.days)
    ]
    assert files == expected
    assert sorted(tmp_path.rglob("*")) == sorted([*expected, *(f.parent for f in expected)])


def test_round_trip_gives_back_the_rows_and_their_day(transactions, tmp_path):
    write_raw(transactions.sample(fraction=1.0, shuffle=True, seed=1), tmp_path)
    back = read_raw(tmp_path)
    assert dict(back.schema) == {**RAW_SCHEMA, PARTITION_KEY: pl.Date()}
    assert back.drop(PARTITION_KEY).equals(transactions)
    assert (back[PARTITION_KEY] == back[TX_DATETIME].dt.date()).all()


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(transactions, tmp_path):
    write_raw(transactions, tmp_path / "a")
    write_raw(simulate(SMALL), tmp_path / "b")
    write_raw(transactions.reverse(), tmp_path / "reordered")
    write_raw(simulate(SMALL.model_copy(update={"seed": 6})), tmp_path / "other")
    reference = digests(tmp_path / "a")
    assert len(reference) == SMALL.days
    assert digests(tmp_path / "b") == reference
    assert digests(tmp_path / "reordered") == reference
    other = digests(tmp_path / "other")
    assert other.keys() == reference.keys()
    assert all(other[name] != digest for name, digest in reference.items())


def test_existing_days_are_never_overwritten_silently(transactions, tmp_path):
    write_raw(transactions, tmp_path)
    before = digests(tmp_path)
    overlapping = simulate(SMALL.model_copy(update={"start": dt.date(2018, 4, 6), "seed": 9}))
    with pytest.raises(FileExistsError, match="5 day"):
        write_raw(overlapping, tmp_path)
    assert digests(tmp_path) == before

    write_raw(overlapping, tmp_path, overwrite=True)
    after = read_raw(tmp_path)
    assert after[PARTITION_KEY].n_unique() == 15
    replaced = after.filter(pl.col(PARTITION_KEY) >= dt.date(2018, 4, 6)).drop(PARTITION_KEY)
    assert replaced.equals(overlapping)


def test_a_batch_of_new_days_appends(transactions, tmp_path):
    write_raw(transactions, tmp_path)
    later = simulate(SMALL.model_copy(update={"start": SMALL.start + dt.timedelta(days=10)}))
    write_raw(later, tmp_path)
    both = read_raw(tmp_path)
    assert both.height == transactions.height + later.height
    assert both[TRANSACTION_ID].is_unique().all()
    assert both[TRANSACTION_ID].is_sorted()


def test_reads_one_partition_alone(transactions, tmp_path):
    write_raw(transactions, tmp_path)
    day = SMALL.start + dt.timedelta(days=3)
    one = read_raw(partition_dir(tmp_path, day))
    assert one.height == transactions.filter(pl.col(TX_DATETIME).dt.date() == day).height > 0
    assert one[PARTITION_KEY].unique().to_list() == [day]


def test_day_comes_from_the_partition_not_the_timestamp(transactions, tmp_path):
    write_raw(transactions, tmp_path)
    first, second = (partition_dir(tmp_path, SMALL.start + dt.timedelta(days=i)) for i in (0, 1))
    (first / PART_FILE).rename(second / "misfiled.parquet")
    first.rmdir()
    back = read_raw(tmp_path)
    misfiled = back.filter(pl.col(TX_DATETIME).dt.date() == SMALL.start)
    assert misfiled.height > 0
    assert (misfiled[PARTITION_KEY] == SMALL.start + dt.timedelta(days=1)).all()


def test_a_folder_without_partitions_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no day=YYYY-MM-DD partitions"):
        read_raw(tmp_path)
    with pytest.raises(FileNotFoundError, match="no raw data folder"):
        read_raw(tmp_path / "missing")
    (tmp_path / "day=2018-04-01").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no Parquet file"):
        read_raw(tmp_path)


def test_a_badly_named_partition_is_refused(transactions, tmp_path):
    write_raw(transactions, tmp_path)
    partition_dir(tmp_path, SMALL.start).rename(tmp_path / "day=20180401")
    with pytest.raises(ValueError, match="is not named"):
        read_raw(tmp_path)


def test_frames_off_the_raw_schema_are_refused(transactions, tmp_path):
    with pytest.raises(ValueError, match="lack columns"):
        write_raw(transactions.drop(TX_AMOUNT), tmp_path)
    with pytest.raises(ValueError, match="wrong dtype"):
        write_raw(transactions.with_columns(pl.col(TX_AMOUNT).cast(pl.Float32)), tmp_path)
    with pytest.raises(ValueError, match="no transactions"):
        write_raw(transactions.clear(), tmp_path)
    assert not any(tmp_path.iterdir())
