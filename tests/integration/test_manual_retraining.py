"""A person who asks for a retraining gets it; the cool-down holds back automatic runs only.

The state each test starts from is the one `make demo` leaves: a retraining started less
than ``retrain_cooldown_s`` ago (``mark_started``).
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import subprocess
import sys
from pathlib import Path

import pytest
from loop_support import log_offline, served_flows, simulated_days, use_project, wait_until
from mlflow import MlflowClient

from fraudops.config import Settings, get_settings
from fraudops.data.datasets import write_raw
from fraudops.logs.journal import journal_dir, next_day
from fraudops.tracking.registry import CHALLENGER, configure_mlflow, version_by_alias
from pipelines.deployments import RETRAIN
from pipelines.retraining import (
    REASON_TAG,
    REQUESTED_BY_TAG,
    TRIGGER_TAG,
    mark_started,
    retrain_flow,
)
from pipelines.training import training_flow

COOLDOWN_S = "21600"
#: How long ago the demo's drift-triggered retraining started, in the issue's report.
DEMO_RETRAINING_AGE_S = 3374
RUN_TIMEOUT_S = 300


def just_retrained(settings: Settings) -> None:
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=DEMO_RETRAINING_AGE_S)
    mark_started(settings, started, {TRIGGER_TAG: "event"})


def cooling_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FRAUDOPS_RETRAIN_COOLDOWN_S", COOLDOWN_S)
    get_settings.cache_clear()
    return get_settings()


@pytest.mark.parametrize("trigger", ["event", "direct"])
def test_automatic_runs_still_wait_for_the_cooldown(
    trigger: str, monkeypatch: pytest.MonkeyPatch, prefect_api: str
) -> None:
    just_retrained(cooling_settings(monkeypatch))

    outcome = retrain_flow(signal="data_drift", trigger=trigger)

    assert outcome.status == "skipped" and outcome.reason.startswith("cool-down")


def test_a_manual_run_is_not_held_back_by_the_cooldown(
    monkeypatch: pytest.MonkeyPatch, prefect_api: str
) -> None:
    """No traffic has matured here, so the run goes past the cool-down and stops there."""
    just_retrained(cooling_settings(monkeypatch))

    outcome = retrain_flow(trigger="manual", requested_by="alice", reason="test")

    assert outcome.status == "skipped"
    assert outcome.reason == "no new day of traffic has all its labels yet"


@pytest.mark.slow
def test_fraudops_retrain_during_the_cooldown_retrains_and_records_who_asked_and_why(
    project: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str
) -> None:
    settings = use_project(monkeypatch, project, retrain_cooldown_s=COOLDOWN_S)
    training_flow()
    days = simulated_days(next_day(settings.raw_dir), 2, "none")
    log_offline(settings, days)
    write_raw(days, journal_dir(settings))
    just_retrained(settings)

    env = {**os.environ, "COLUMNS": "200", "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "fraudops"), "retrain", "--reason", "card testing"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "retrained" in done.stderr and "version 2" in done.stderr, done.stderr
    version = version_by_alias(configure_mlflow(settings), settings.model_name, CHALLENGER)
    assert str(version.version) == "2"
    run_tags = MlflowClient().get_run(version.run_id).data.tags
    for tags in (version.tags, run_tags):
        assert tags[TRIGGER_TAG] == "manual"
        assert tags[REQUESTED_BY_TAG] == getpass.getuser()
        assert tags[REASON_TAG] == "card testing"


def deployment_ready(name: str) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except Exception:  # not registered yet
            return False
    return True


def run_logs(flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs)


@pytest.mark.slow
def test_a_run_of_the_deployment_started_by_hand_is_not_held_back_by_the_cooldown(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str
) -> None:
    """A quick run from the Prefect UI: no parameters, so the flow's defaults (manual)."""
    from prefect.deployments import run_deployment

    settings = use_project(monkeypatch, project, retrain_cooldown_s=COOLDOWN_S)
    just_retrained(settings)
    with served_flows(project, "retraining", tmp_path / "flows.log"):
        wait_until(lambda: deployment_ready(RETRAIN), 120, "the retrain deployment")
        run = run_deployment(RETRAIN, timeout=RUN_TIMEOUT_S, poll_interval=1)
        assert run.state is not None and run.state.is_completed(), run.state
        logs = wait_until(
            lambda: (text := run_logs(run.id)) and "no new day" in text and text,
            30,
            "the run's logs",
        )
    assert "a manual request is not held back" in logs
    assert "skipped: cool-down" not in logs
