"""Retraining for real: a drift event on a real Prefect server starts the served
``retrain`` deployment, which versions the matured traffic with DVC, trains on a real
MLflow server, and switches the real scoring API to shadow the new challenger."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import httpx
import polars as pl
import pytest
from loop_support import (
    backfill,
    current_data_version,
    in_remote,
    log_offline,
    replay,
    served_flows,
    simulated_days,
    use_project,
    wait_until,
)
from mlflow import MlflowClient

from fraudops.data.schema import TX_FRAUD
from fraudops.data.validation import BatchRejected
from fraudops.locks import exclusive
from fraudops.logs.journal import journal_dir, next_day
from fraudops.tracking.registry import CHALLENGER, CHAMPION, configure_mlflow, version_by_alias
from pipelines.deployments import RETRAIN
from pipelines.retraining import (
    DRIFT_EVENT,
    MONITOR_RESOURCE,
    MONITORING_RUN_TAG,
    SIGNAL_TAG,
    TRIGGER_TAG,
    retrain_flow,
)
from pipelines.training import training_flow
from serving.server import ServingProcess

pytestmark = pytest.mark.slow

REPLAY_DAYS = 8
RUN_TIMEOUT_S = 300


def deployment_runs(name: str) -> list:
    """Flow runs of deployment NAME, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except Exception:  # not registered yet
            return []
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            sort=FlowRunSort.START_TIME_ASC,
        )


def finished_runs(name: str, monitoring_run: str) -> list | None:
    """The runs of NAME that the drift event of MONITORING_RUN started, once all have ended.

    Other tests serve the same deployment on the shared Prefect server, and each serve may
    leave its trigger behind, so one event can start more than one run: the lock and the
    cool-down make the extra ones skip, and the test waits for every one of them.
    """
    runs = [
        run
        for run in deployment_runs(name)
        if (run.parameters or {}).get("monitoring_run_id") == monitoring_run
    ]
    if runs and all(run.state is not None and run.state.is_final() for run in runs):
        return runs
    return None


def trigger_ready(name: str) -> bool:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except Exception:
            return False
        return bool(client.read_resource_related_automations(f"prefect.deployment.{deployment.id}"))


def run_logs(flow_run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs)


def emit_drift(run_id: str) -> None:
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    emit_event(
        event=DRIFT_EVENT,
        resource={"prefect.resource.id": MONITOR_RESOURCE},
        payload={
            "signal": "data_drift",
            "window_id": f"window-{run_id}",
            "monitoring_run_id": run_id,
        },
    )
    EventsWorker.drain_all(timeout=10)


def test_a_drift_event_retrains_versions_data_and_shadows_once_per_cooldown(
    tmp_path: Path,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_api: str,
    mlflow_settings,
):
    serving = ServingProcess(tmp_path / "logs")
    settings = use_project(monkeypatch, project, serving_url=serving.url, retrain_cooldown_s="3600")
    training_flow()
    client = configure_mlflow(settings)
    first_version = current_data_version(project)
    backfill(settings)
    with serving:
        _, stats = replay(settings, serving.url, REPLAY_DAYS, "amount_shift")
        assert stats.failed == 0 and stats.labels_failed == 0, stats.errors

        with served_flows(project, "retraining", tmp_path / "logs" / "flows.log"):
            wait_until(lambda: trigger_ready(RETRAIN), 120, "the retrain deployment's trigger")
            first_id, second_id = (f"monitoring-{uuid.uuid4().hex[:8]}" for _ in range(2))
            emit_drift(first_id)
            first = wait_until(
                lambda: finished_runs(RETRAIN, first_id),
                RUN_TIMEOUT_S,
                "the triggered retraining",
            )
            assert all(run.state.is_completed() for run in first), run_logs(first[0].id)

            challenger = version_by_alias(client, settings.model_name, CHALLENGER)
            champion = version_by_alias(client, settings.model_name, CHAMPION)
            assert (str(challenger.version), str(champion.version)) == ("2", "1")
            assert challenger.tags[TRIGGER_TAG] == "event"
            assert challenger.tags[SIGNAL_TAG] == "data_drift"
            assert challenger.tags[MONITORING_RUN_TAG] == first_id
            new_version = current_data_version(project)
            assert new_version != first_version and in_remote(project, new_version)
            run = MlflowClient().get_run(challenger.run_id)
            assert run.data.tags["fraudops.data_version"] == new_version
            assert len(list(settings.raw_dir.glob("day=*"))) == 49 + REPLAY_DAYS

            routing = httpx.get(f"{serving.url}/v1/models").json()
            assert routing["routing"]["configured"]["shadow"]["alias"] == CHALLENGER
            loaded = {model["alias"]: model["version"] for model in routing["models"]}
            assert loaded[CHALLENGER] == "2"

            emit_drift(second_id)
            second = wait_until(
                lambda: finished_runs(RETRAIN, second_id),
                RUN_TIMEOUT_S,
                "the second retraining run",
            )
            assert all(run.state.is_completed() for run in second)
            wait_until(
                lambda: any("cool-down" in run_logs(run.id) for run in second),
                30,
                "the skip in the logs",
            )
    assert str(version_by_alias(client, settings.model_name, CHALLENGER).version) == "2"
    assert current_data_version(project) == new_version


def test_a_batch_that_fails_validation_stops_before_anything_changes(
    project: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str
):
    """Every label of the new days says fraud: a broken label feed, caught by the rules."""
    settings = use_project(monkeypatch, project, retrain_cooldown_s="0")
    training_flow()
    days = simulated_days(next_day(settings.raw_dir), 2, "none")
    log_offline(settings, days, labels=pl.Series(TX_FRAUD, [1] * days.height))
    from fraudops.data.datasets import write_raw

    write_raw(days, journal_dir(settings))
    before = current_data_version(project), sorted(settings.raw_dir.iterdir())

    with pytest.raises(BatchRejected, match="fraud"):
        retrain_flow(signal="concept_drift")

    assert (current_data_version(project), sorted(settings.raw_dir.iterdir())) == before
    client = configure_mlflow(settings)
    assert str(version_by_alias(client, settings.model_name, CHAMPION).version) == "1"
    assert str(version_by_alias(client, settings.model_name, CHALLENGER).version) == "1"


def test_a_retraining_in_flight_makes_the_next_one_skip(
    monkeypatch: pytest.MonkeyPatch, prefect_api: str
):
    from fraudops.config import get_settings

    lock = get_settings().home / "retraining" / "lock"
    lock.parent.mkdir(parents=True)
    with exclusive(lock) as held:
        assert held
        outcome = retrain_flow(signal="data_drift")
    assert outcome.status == "skipped" and "in flight" in outcome.reason


def test_cooldown_counts_from_the_last_start(monkeypatch: pytest.MonkeyPatch):
    from fraudops.config import get_settings
    from pipelines.retraining import cooling_down, mark_started

    monkeypatch.setenv("FRAUDOPS_RETRAIN_COOLDOWN_S", "60")
    get_settings.cache_clear()
    settings = get_settings()
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert cooling_down(settings, start) is None
    mark_started(settings, start, {})
    assert "cool-down" in cooling_down(settings, start + dt.timedelta(seconds=59))
    assert cooling_down(settings, start + dt.timedelta(seconds=60)) is None
