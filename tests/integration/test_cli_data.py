"""The data commands as a user runs them: generate, validate, featurize."""

from __future__ import annotations

import shutil

import polars as pl
import pytest
from typer.testing import CliRunner

from fraudops.cli import app
from fraudops.data.datasets import read_raw, write_raw
from fraudops.data.schema import TX_AMOUNT

runner = CliRunner()
SMALL = ["--customers", "150", "--terminals", "300", "--days", "40", "--seed", "3"]


@pytest.fixture
def raw_dir(tmp_path):
    out = tmp_path / "raw"
    result = runner.invoke(app, ["generate", *SMALL, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_generate_writes_a_partition_per_day(raw_dir):
    batch = read_raw(raw_dir)
    assert batch["day"].n_unique() == 40
    assert len(list(raw_dir.glob("day=*"))) == 40


def test_generate_refuses_to_overwrite_without_the_flag(raw_dir):
    result = runner.invoke(app, ["generate", *SMALL, "--out", str(raw_dir)])
    assert result.exit_code == 1
    assert "--overwrite" in result.output


def test_validate_accepts_a_good_batch_and_writes_its_report(raw_dir, tmp_path):
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["validate", str(raw_dir), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert '"days": 40' in report.read_text()


def test_validate_rejects_a_bad_batch_naming_the_rule(raw_dir, tmp_path):
    bad = read_raw(raw_dir).drop("day")
    bad = bad.with_columns(
        pl.when(pl.int_range(pl.len()) == 7)
        .then(-1.0)
        .otherwise(pl.col(TX_AMOUNT))
        .alias(TX_AMOUNT)
    )
    bad_dir = tmp_path / "bad"
    write_raw(bad, bad_dir)
    result = runner.invoke(app, ["validate", str(bad_dir)])
    assert result.exit_code == 1
    assert "negative_amount" in result.output


def test_validate_rejects_a_path_without_data(tmp_path):
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "error" in result.output


def test_featurize_writes_validated_features(raw_dir, tmp_path):
    out = tmp_path / "features.parquet"
    result = runner.invoke(app, ["featurize", "--raw", str(raw_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    features = pl.read_parquet(out)
    assert features.height == read_raw(raw_dir).height


def test_featurize_on_a_missing_folder_fails_cleanly(tmp_path):
    shutil.rmtree(tmp_path, ignore_errors=True)
    result = runner.invoke(app, ["featurize", "--raw", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a clear message, not a traceback
    assert "nope" in result.output


def test_demo_refuses_too_few_drift_days_before_starting_anything():
    result = runner.invoke(app, ["demo", "--drift-days", "7"])
    assert result.exit_code == 1
    assert "more than the label delay (7 days)" in result.output
    assert "generate" not in result.output  # no step ran
