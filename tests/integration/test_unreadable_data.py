"""Unreadable raw files, as a user meets them: each command names the rule and the file,
exits 1 without a traceback, and changes nothing (the champion stays)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import polars as pl
import pytest
from loop_support import current_data_version, log_offline, simulated_days, use_project
from sklearn.dummy import DummyClassifier
from typer.testing import CliRunner

from fraudops.cli import app
from fraudops.config import Settings, SimulateParams
from fraudops.data.datasets import PART_FILE, write_raw
from fraudops.data.schema import TX_AMOUNT
from fraudops.data.simulate import simulate
from fraudops.data.validation import BatchRejected
from fraudops.logs.journal import journal_dir, next_day
from fraudops.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    configure_mlflow,
    register,
    version_by_alias,
)
from pipelines.retraining import retrain_flow
from pipelines.training import training_flow

runner = CliRunner()
FRAUDOPS = str(Path(sys.executable).parent / "fraudops")
SMALL = SimulateParams(customers=50, terminals=100, days=3, seed=5)


def empty(path: Path) -> None:
    path.write_bytes(b"")


def not_parquet(path: Path) -> None:
    path.write_text("transaction_id,tx_amount\n1,12.5\n")


def without_amount(path: Path) -> None:
    pl.read_parquet(path).drop(TX_AMOUNT).write_parquet(path)


BREAKAGES = {
    "0-byte file": ("unreadable_file", empty),
    "not Parquet": ("unreadable_file", not_parquet),
    "missing column": ("missing_columns", without_amount),
}


def break_a_file(raw_dir: Path, breaks=empty, index: int = 0) -> Path:
    broken = sorted(raw_dir.glob(f"day=*/{PART_FILE}"))[index]
    breaks(broken)
    return broken


def unwrapped(text: str) -> str:
    """TEXT without whitespace: the console wraps long paths at its width."""
    return "".join(text.split())


def fraudops(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed `fraudops` command, as a user runs it (its own output, its own exit)."""
    env = {**os.environ, "COLUMNS": "200", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(
        [FRAUDOPS, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def register_champion(settings: Settings) -> str:
    client = configure_mlflow(settings)
    with mlflow.start_run():
        model = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    return str(register(client, info.model_uri, settings.model_name).version)


@pytest.mark.parametrize("command", ["validate", "backfill"])
@pytest.mark.parametrize("breakage", BREAKAGES)
def test_reading_commands_name_the_rule_and_the_file_without_a_traceback(
    tmp_path: Path, breakage: str, command: str
) -> None:
    rule, breaks = BREAKAGES[breakage]
    write_raw(simulate(SMALL), tmp_path / "raw")
    broken = break_a_file(tmp_path / "raw", breaks)
    raw = str(tmp_path / "raw")

    result = runner.invoke(
        app, ["validate", raw] if command == "validate" else [command, "--raw", raw]
    )

    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    assert rule in result.output
    assert unwrapped(str(broken)) in unwrapped(result.output)


@pytest.mark.slow
def test_train_on_a_raw_folder_with_an_empty_file_fails_cleanly_and_keeps_the_champion(
    prefect_api: str,
    small_training: Settings,
    small_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    champion = register_champion(small_training)
    data = tmp_path / "data"
    shutil.copytree(small_data_dir, data)
    broken = break_a_file(data / "raw", index=10)
    monkeypatch.setenv("FRAUDOPS_DATA_DIR", str(data))

    done = fraudops("train")

    assert done.returncode == 1, done.stderr
    assert "unreadable_file" in done.stderr and str(broken) in unwrapped(done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    assert "Retry" not in done.stderr  # the same bytes would be read again
    client = configure_mlflow(small_training)
    versions = client.search_model_versions(f"name = '{small_training.model_name}'")
    assert [str(version.version) for version in versions] == [champion]
    assert str(version_by_alias(client, small_training.model_name, CHAMPION).version) == champion


@pytest.mark.slow
def test_retrain_with_an_unreadable_file_in_data_raw_changes_nothing(
    project: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str
) -> None:
    """The batch is fine; a stored file is not: caught before the batch joins the data."""
    settings = use_project(monkeypatch, project, retrain_cooldown_s="0")
    champion = training_flow().version
    days = simulated_days(next_day(settings.raw_dir), 2, "none")
    log_offline(settings, days)
    write_raw(days, journal_dir(settings))
    broken = break_a_file(settings.raw_dir, index=5)
    before = current_data_version(project), sorted(settings.raw_dir.iterdir())

    done = fraudops("retrain", "--reason", "test", cwd=project)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "unreadable_file" in done.stderr and str(broken) in unwrapped(done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    assert (current_data_version(project), sorted(settings.raw_dir.iterdir())) == before
    client = configure_mlflow(settings)
    for alias in (CHAMPION, CHALLENGER):
        assert str(version_by_alias(client, settings.model_name, alias).version) == champion


def test_a_journal_file_that_cannot_be_read_stops_retraining_naming_it(
    project: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str
) -> None:
    settings = use_project(monkeypatch, project, retrain_cooldown_s="0")
    write_raw(simulated_days(next_day(settings.raw_dir), 2, "none"), journal_dir(settings))
    broken = break_a_file(journal_dir(settings))
    before = current_data_version(project), sorted(settings.raw_dir.iterdir())

    with pytest.raises(BatchRejected, match="unreadable_file") as rejected:
        retrain_flow(signal="data_drift", trigger="event")

    assert str(broken) in str(rejected.value)
    assert (current_data_version(project), sorted(settings.raw_dir.iterdir())) == before
