"""What the monitoring and retraining tests share: a small project, a server, traffic.

A *project* is a fresh git + DVC repository with a local remote, a few weeks of simulated
transactions in ``data/raw`` recorded as its first data version, and a params.yaml cut
down so a training run takes seconds and a monitoring window of a few thousand rows is
enough to judge. Tests chdir into it, as a user runs ``fraudops`` from the project root.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest
import yaml

from fraudops.config import Scenario, Settings, SimulateParams, get_settings, load_params
from fraudops.data.datasets import read_raw, write_raw
from fraudops.data.schema import CUSTOMER_ID, TERMINAL_ID, TRANSACTION_ID, TX_DATETIME, TX_FRAUD
from fraudops.data.simulate import simulate
from fraudops.data.versioning import data_version, record_data_version
from fraudops.features.definitions import build_features, feature_columns
from fraudops.features.online_store import open_online_store
from fraudops.local.traffic import ReplayConfig, ReplayStats, following_days
from fraudops.local.traffic import replay as replay_traffic
from fraudops.logs.journal import journal_dir, next_day
from fraudops.logs.records import LabelRecord, PredictionRecord
from fraudops.logs.writer import PredictionLogWriter
from fraudops.modeling.steps import score_frame
from fraudops.tracking.logged_models import load_registered_model
from fraudops.tracking.registry import CHAMPION, configure_mlflow, version_by_alias

SOURCE = Path(__file__).resolve().parents[1]
ADMIN_KEY = "loop-admin-key-0123456789"
POPULATION = SimulateParams(customers=300, terminals=600, days=49, seed=5)
LABEL_DELAY_DAYS = 7
REMOTE_DIR = "dvc-remote"
SMALL_TRAIN = {
    "validation_folds": 1,
    "candidates": {"xgboost": {"fixed": {"n_estimators": 40, "max_depth": 3}, "grid": {}}},
}
SMALL_MONITOR = {
    "sample_size": 5000,
    "min_rows": 300,
    "min_labelled_rows": 300,
    "min_labelled_frauds": 5,  # a fresh simulated fortnight holds few frauds at this scale
    "min_reference_frauds": 5,  # the small reference's test week holds about ten
}


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def build_project(root: Path) -> Path:
    """A git + DVC repository holding the first data version and the small params.

    Its DVC remote is ``../dvc-remote``, recorded as a relative path, so a copy of the
    project and its remote side by side (``copy_project``) is a project of its own.
    """
    root.mkdir(parents=True)
    params = yaml.safe_load((SOURCE / "params.yaml").read_text())
    params["simulate"].update(POPULATION.model_dump(mode="json"))
    params["train"].update(SMALL_TRAIN)
    params["monitor"].update(SMALL_MONITOR)
    params["features"]["label_delay_days"] = LABEL_DELAY_DAYS
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    _run(["git", "init", "-q"], root)
    dvc = [sys.executable, "-m", "dvc"]
    _run([*dvc, "init", "-q"], root)
    _run([*dvc, "config", "core.analytics", "false"], root)
    _run([*dvc, "remote", "add", "-d", "local", os.path.join("..", REMOTE_DIR)], root)
    write_raw(simulate(POPULATION), root / "data" / "raw")
    (root / "data.dvc").write_text("outs:\n- path: data/raw\n")
    record_data_version(root / "data.dvc")
    return root


def copy_project(template: Path, root: Path) -> Path:
    """A fresh copy of a ``build_project`` project and its remote: seconds cheaper than
    building one, as each DVC command costs a Python start."""
    shutil.copytree(template, root, symlinks=True)
    shutil.copytree(template.parent / REMOTE_DIR, root.parent / REMOTE_DIR)
    return root


def use_project(monkeypatch: pytest.MonkeyPatch, project: Path, **settings: str) -> Settings:
    """Run from PROJECT with its data and params; SETTINGS become FRAUDOPS_<NAME>."""
    monkeypatch.chdir(project)
    env = {
        "DATA_DIR": str(project / "data"),
        "PARAMS_PATH": str(project / "params.yaml"),
        "ADMIN_API_KEY": ADMIN_KEY,
        "PREDICTION_LOG_FLUSH_INTERVAL_S": "0.1",
        **{key.upper(): value for key, value in settings.items()},
    }
    for key, value in env.items():
        monkeypatch.setenv(f"FRAUDOPS_{key}", value)
    monkeypatch.setenv("FRAUDOPS_ROUTING_PATH", str(get_home() / "routing.yaml"))
    get_settings.cache_clear()
    return get_settings()


def get_home() -> Path:
    return Path(os.environ["FRAUDOPS_HOME"])


def backfill(settings: Settings) -> None:
    """Serving's online state as of the end of the training data."""
    params = load_params().features
    with open_online_store(settings.feature_store_url, params) as store:
        store.backfill(read_raw(settings.raw_dir))


def current_data_version(project: Path) -> str:
    return data_version(project / "data.dvc")


def in_remote(project: Path, version: str) -> bool:
    """Whether the DVC remote holds the directory manifest of VERSION (it was pushed)."""
    digest = version.removesuffix(".dir")
    return (
        project.parent / "dvc-remote" / "files" / "md5" / digest[:2] / f"{digest[2:]}.dir"
    ).exists()


def replay(
    settings: Settings, base_url: str, days: int, scenario: Scenario
) -> tuple[pl.DataFrame, ReplayStats]:
    """DAYS simulated days after the data (and earlier replays) through the API, labels
    drained; returns the transactions and what the replay counted."""
    start = next_day(settings.raw_dir, journal_dir(settings))
    transactions = following_days(load_params().simulate, start, days, scenario)
    config = ReplayConfig(base_url=base_url, seconds_per_day=0, label_delay_days=LABEL_DELAY_DAYS)
    stats = replay_traffic(transactions, config, journal=journal_dir(settings))
    return transactions, stats


def log_offline(
    settings: Settings,
    new: pl.DataFrame,
    *,
    labels: pl.Series | None = None,
    labelled: bool = True,
    feature_names: list[str] | None = None,
) -> None:
    """Log NEW as if served by the champion: offline features (equal to the online ones by
    the parity contract), the champion's scores, and LABELS (default: the true ones; none
    without LABELLED).

    FEATURE_NAMES replaces the logged feature names, to log traffic of another feature set.
    """
    params = load_params()
    history = read_raw(settings.raw_dir).drop("day")
    features = build_features(pl.concat([history, new]), params.features).filter(
        pl.col(TRANSACTION_ID).is_in(new[TRANSACTION_ID].implode())
    )
    client = configure_mlflow(settings)
    champion = version_by_alias(client, settings.model_name, CHAMPION)
    assert champion is not None
    model, card = load_registered_model(
        f"models:/{settings.model_name}/{champion.version}", settings.home / "model-cache"
    )
    scores = score_frame(model, card, features)
    truth = features[TX_FRAUD] if labels is None else labels
    names = feature_columns(params.features)
    logged_names = feature_names or names
    received = dt.datetime.now(dt.UTC)
    with PredictionLogWriter.from_settings(settings) as writer:
        rows = features.iter_rows(named=True)
        for row, score, label in zip(rows, scores, truth, strict=True):
            writer.log_prediction(
                PredictionRecord(
                    request_id=uuid.uuid4().hex,
                    transaction_id=row[TRANSACTION_ID],
                    tx_datetime=row[TX_DATETIME],
                    customer_id=row[CUSTOMER_ID],
                    terminal_id=row[TERMINAL_ID],
                    features={new: row[old] for old, new in zip(names, logged_names, strict=True)},
                    model_name=settings.model_name,
                    model_version=str(champion.version),
                    model_alias=CHAMPION,
                    arm=CHAMPION,
                    score=float(score),
                    decision=bool(score >= card.threshold),
                    threshold=card.threshold,
                    latency_ms=1.0,
                ),
                wait_s=30,
            )
            if labelled:
                writer.log_label(LabelRecord(row[TRANSACTION_ID], int(label), received), wait_s=30)


def log_labels(settings: Settings, transactions: pl.DataFrame) -> None:
    """The true labels of TRANSACTIONS arriving now."""
    with PredictionLogWriter.from_settings(settings) as writer:
        for transaction_id, label in transactions.select(TRANSACTION_ID, TX_FRAUD).iter_rows():
            writer.log_label(LabelRecord(transaction_id, label), wait_s=30)


def simulated_days(start: dt.date, days: int, scenario: Scenario) -> pl.DataFrame:
    return following_days(load_params().simulate, start, days, scenario)


@contextmanager
def served_flows(project: Path, only: str, log: Path) -> Iterator[subprocess.Popen]:
    """``python -m pipelines.deployments --only ONLY`` from PROJECT, stopped on exit.

    The runner polls for runs every second here (10 s by default), so a triggered run
    starts about as soon as the trigger creates it.
    """
    env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.deployments", "--only", only],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_until(condition, timeout: float, what: str, interval: float = 1.0):
    """Poll CONDITION until it returns something truthy; fail naming WHAT after TIMEOUT."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(interval)
