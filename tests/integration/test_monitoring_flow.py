"""The monitoring flow for real: a champion in MLflow, a prediction log, a Prefect server.

The log is filled as serving would fill it (offline features equal the online ones by the
parity contract), so these tests need no scoring API; the closed-loop test sends real
traffic through one.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from loop_support import (
    log_labels,
    log_offline,
    simulated_days,
    use_project,
    wait_until,
)
from mlflow import MlflowClient
from sklearn.dummy import DummyClassifier

from fraudops.config import get_settings, load_params
from fraudops.data.datasets import write_raw
from fraudops.experiments.report_parts import ReportWindow
from fraudops.features.definitions import feature_columns
from fraudops.logs.journal import journal_dir, next_day
from fraudops.tracking.registry import configure_mlflow, register
from fraudops.tracking.runs import FAIRNESS_GAPS, FAIRNESS_PLOT, FAIRNESS_SEGMENTS, THRESHOLD_TAG
from monitoring.analysis import MonitoringError
from monitoring.workspace import PROJECT_NAME, open_workspace
from pipelines.monitoring_flow import (
    ERROR_TAG,
    GAP_ALARM_TAG,
    REALISED_FILE,
    SIGNAL_TAG,
    WINDOW_TAG,
    ReferenceMissing,
    fixed_window,
    monitoring_flow,
)
from pipelines.retraining import DRIFT_EVENT, MONITOR_RESOURCE
from pipelines.training import training_flow

pytestmark = pytest.mark.slow

WINDOW_DAYS = 7


@pytest.fixture
def trained(project: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str):
    """A project whose champion was trained by the training flow (embedded MLflow)."""
    settings = use_project(monkeypatch, project)
    training_flow()
    return settings


def first_new_day(settings) -> dt.date:
    return next_day(settings.raw_dir)


def window_start(settings) -> dt.datetime:
    return dt.datetime.combine(first_new_day(settings), dt.time())


def drift_events(api_url: str, since: dt.datetime) -> list[dict]:
    body = {
        "filter": {
            "occurred": {"since": since.isoformat()},
            "event": {"name": [DRIFT_EVENT]},
        },
        "limit": 50,
    }
    answer = httpx.post(f"{api_url}/events/filter", json=body, timeout=10)
    answer.raise_for_status()
    return answer.json()["events"]


def test_amount_shift_is_data_drift_recorded_everywhere_and_announced(trained, prefect_api):
    settings = trained
    started = dt.datetime.now(dt.UTC)
    log_offline(settings, simulated_days(first_new_day(settings), WINDOW_DAYS, "amount_shift"))

    outcome = monitoring_flow(
        since=window_start(settings), by_transaction_time=True, on_drift="event"
    )

    decision = outcome.decision
    assert decision.signal == "data_drift", decision.reasons
    assert decision.data_drift is not None and decision.data_drift.drifted_features
    assert outcome.retraining and outcome.retraining.startswith("event")

    assert {"decision.json", "drift.html", "drift.json"} <= {
        path.name for path in outcome.report_dir.iterdir()
    }
    assert json.loads((outcome.report_dir / "decision.json").read_text())["signal"] == "data_drift"

    client = MlflowClient()
    run = client.get_run(outcome.run_id)
    assert run.data.tags[SIGNAL_TAG] == "data_drift"
    assert run.data.tags[WINDOW_TAG] == decision.window_id
    assert run.data.metrics["drift.drifted_share"] == pytest.approx(
        decision.data_drift.drifted_share
    )
    assert run.data.metrics["signal.data_drift"] == 1.0
    artifacts = {item.path for item in client.list_artifacts(outcome.run_id, "reports")}
    assert {"reports/drift.html", "reports/decision.json"} <= artifacts

    workspace = open_workspace(settings.monitoring_workspace)
    project = workspace.search_project(PROJECT_NAME)[0]
    assert len(workspace.list_runs(project.id)) >= 2  # the drift report and the summary

    events = wait_until(
        lambda: drift_events(prefect_api, started), timeout=60, what="the drift event"
    )
    event = events[0]
    assert event["resource"]["prefect.resource.id"] == MONITOR_RESOURCE
    assert event["payload"]["signal"] == "data_drift"
    assert event["payload"]["window_id"] == decision.window_id
    assert event["payload"]["monitoring_run_id"] == outcome.run_id
    assert event["payload"]["numbers"]["drift.drifted_share"] == pytest.approx(
        decision.data_drift.drifted_share
    )


def test_an_estimate_made_before_labels_is_compared_once_they_arrive(trained):
    """Two weeks: a fresh simulation starts with no compromised card or terminal, so its
    first week holds too few frauds to judge quality on."""
    settings = trained
    days = simulated_days(first_new_day(settings), 2 * WINDOW_DAYS, "none")
    log_offline(settings, days, labelled=False)
    early = monitoring_flow(since=window_start(settings), by_transaction_time=True, on_drift="none")
    assert early.decision.counts.labelled_rows == 0
    assert early.decision.estimate is not None, early.decision.notes
    assert not (early.report_dir / REALISED_FILE).exists()

    log_labels(settings, days)
    monitoring_flow(since=dt.datetime(2030, 1, 1), by_transaction_time=True, on_drift="none")

    checks = json.loads((early.report_dir / REALISED_FILE).read_text())
    assert {check["metric"] for check in checks} == set(early.decision.estimate.values)
    for check in checks:
        assert check["estimated"] == pytest.approx(early.decision.estimate.values[check["metric"]])
        assert 0 <= check["realised"] <= 1
    workspace = open_workspace(settings.monitoring_workspace)
    project = workspace.search_project(PROJECT_NAME)[0]
    runs = [workspace.get_run(project.id, run) for run in workspace.list_runs(project.id)]
    realised = [run for run in runs if "realised" in run.tags]
    assert [run.metadata["window_id"] for run in realised] == [early.decision.window_id]


def test_segment_tables_are_logged_once_the_journal_holds_the_customers(trained):
    """Without the replay's journal the run notes why and goes on; with it, the run logs
    the per-segment table and gaps where the training run logs its own."""
    settings = trained
    days = simulated_days(first_new_day(settings), 2 * WINDOW_DAYS, "none")
    log_offline(settings, days)
    window = {"since": window_start(settings), "by_transaction_time": True, "on_drift": "none"}

    without = monitoring_flow(**window)
    assert without.decision.segment_gaps is None
    assert any("no traffic journal" in note for note in without.decision.notes)

    write_raw(days, journal_dir(settings))
    outcome = monitoring_flow(**window)
    gaps = outcome.decision.segment_gaps
    assert gaps is not None, outcome.decision.notes
    client = MlflowClient()
    logged = {item.path for item in client.list_artifacts(outcome.run_id, "fairness")}
    assert {FAIRNESS_SEGMENTS, FAIRNESS_GAPS} <= logged
    assert FAIRNESS_PLOT in {item.path for item in client.list_artifacts(outcome.run_id, "plots")}
    table = mlflow.load_table(FAIRNESS_SEGMENTS, run_ids=[outcome.run_id])
    assert table["training_alert_rate"].notna().any()
    run = client.get_run(outcome.run_id)
    assert run.data.tags[GAP_ALARM_TAG] == str(gaps.alarm).lower()
    assert run.data.metrics["fairness.gap_alarm"] == float(gaps.alarm)


def test_an_empty_window_is_insufficient_data_not_an_error(trained):
    outcome = monitoring_flow(since=dt.datetime(2030, 1, 1), by_transaction_time=True)
    assert outcome.decision.signal == "insufficient_data"
    assert outcome.decision.counts.rows == 0
    assert outcome.retraining is None
    assert MlflowClient().get_run(outcome.run_id).data.tags[SIGNAL_TAG] == "insufficient_data"


def test_a_window_that_cannot_be_analysed_names_it_and_the_next_run_goes_on(trained):
    settings = trained
    day = first_new_day(settings)
    names = feature_columns(load_params().features)
    renamed = [f"old_{name}" for name in names]
    log_offline(settings, simulated_days(day, 2, "none"), feature_names=renamed)

    with pytest.raises(MonitoringError) as failure:
        monitoring_flow(
            window_id="bad-window", since=window_start(settings), by_transaction_time=True
        )
    assert "bad-window" in str(failure.value)
    failed = mlflow.search_runs(
        filter_string=f"tags.`{WINDOW_TAG}` = 'bad-window'", output_format="list"
    )
    assert failed and failed[0].info.status == "FAILED"
    assert "bad-window" in failed[0].data.tags[ERROR_TAG]

    later = dt.datetime.combine(day + dt.timedelta(days=2), dt.time())
    log_offline(settings, simulated_days(day + dt.timedelta(days=2), WINDOW_DAYS, "none"))
    outcome = monitoring_flow(since=later, by_transaction_time=True)
    assert outcome.decision.signal in {"none", "data_drift", "concept_drift"}
    assert outcome.decision.counts.valid_rows > 0


def test_a_champion_without_reference_sample_is_a_clear_error(
    trained, monkeypatch: pytest.MonkeyPatch
):
    """A model logged outside the training flow has no reference sample to monitor with."""
    client = configure_mlflow(trained)
    with mlflow.start_run():
        mlflow.set_tag(THRESHOLD_TAG, "0.5")
        model = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    name = f"{trained.model_name}-bare"
    version = register(client, info.model_uri, name)
    monkeypatch.setenv("FRAUDOPS_MODEL_NAME", name)
    get_settings.cache_clear()

    with pytest.raises(ReferenceMissing, match=f"version {version.version} "):
        monitoring_flow(last_n=10)


def test_a_last_n_window_is_kept_as_the_time_bounds_of_its_rows():
    """Read again later, "the newest N" would be other rows; its bounds are not."""
    times = pd.to_datetime(["2024-01-01 10:00", "2024-01-01 12:00"], utc=True)
    window = ReportWindow(last_n=2)
    fixed = fixed_window(window, pd.DataFrame({"logged_at": times}))
    assert fixed.last_n is None
    assert fixed.start == times[0]
    assert times[1] < fixed.end <= times[1] + pd.Timedelta(milliseconds=1)
    assert fixed_window(ReportWindow(start=times[0]), pd.DataFrame()) == ReportWindow(
        start=times[0]
    )
