"""Dashboards built by code, and `fraudops dashboards` serving them over HTTP."""

from __future__ import annotations

import datetime as dt
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fraudops.config import Params
from fraudops.features.definitions import feature_columns
from fraudops.local.servers import HOST, free_port
from monitoring.analysis import analyse_window, check_estimate
from monitoring.scenarios import simulate_world, without_labels
from monitoring.workspace import (
    PROJECT_NAME,
    dashboard,
    ensure_project,
    open_workspace,
    record_realised,
    record_window,
)

PARAMS = Params()
FEATURES = feature_columns(PARAMS.features)
FIRST_WINDOW = dt.datetime(2018, 6, 6)
UI_START_TIMEOUT_S = 240.0


def test_the_dashboard_is_built_once_and_rebuilt_without_change(tmp_path):
    workspace = open_workspace(tmp_path / "workspace")
    first = ensure_project(workspace, FEATURES)
    again = ensure_project(workspace, FEATURES)
    assert again.id == first.id
    assert [project.name for project in workspace.list_projects()] == [PROJECT_NAME]
    saved = workspace.get_dashboard(first.id)
    assert saved == dashboard(FEATURES)
    assert [tab.title for tab in saved.tabs] == ["Drift", "Performance", "Traffic"]
    assert sum(len(tab.panels) for tab in saved.tabs) == len(saved.panels) == 11
    per_feature = next(panel for panel in saved.panels if panel.title == "Drift score per feature")
    assert [value.metric_labels["column"] for value in per_feature.values] == FEATURES


@pytest.fixture(scope="module")
def workspace_with_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Two weekly windows: one analysed before its labels (then checked once they land),
    one with its labels."""
    world = simulate_world(seed=2, customers=1500)
    path = tmp_path_factory.mktemp("evidently") / "workspace"
    workspace = open_workspace(path)
    project = ensure_project(workspace, FEATURES)
    weeks = [without_labels(world.windows["none"]), world.windows["new_fraud_pattern"]]
    for week, window in enumerate(weeks):
        result = analyse_window(
            world.reference,
            window,
            threshold=world.threshold,
            params=PARAMS,
            window_id=f"week {week}",
            training_metrics=world.training_metrics,
            timestamp=FIRST_WINDOW + dt.timedelta(days=7 * week),
        )
        record_window(workspace, project, result)
        if week == 0:
            checks = check_estimate(
                result.decision, world.windows["none"], threshold=world.threshold, params=PARAMS
            )
            record_realised(workspace, project, result.decision, checks)
    return path, str(project.id)


def _first_line(process: subprocess.Popen[str], timeout: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=1.0):
            return process.stdout.readline()
        if process.poll() is not None:
            break
    raise AssertionError(f"`fraudops dashboards` printed no URL (exit {process.poll()})")


def _series(base: str, project_id: str, *filters: tuple[str, str, dict[str, str]]) -> list:
    body = {
        "series_filter": [
            {
                "tags": [tag],
                "metadata": {},
                "metric": f"evidently:metric_v2:{metric}",
                "metric_labels": labels,
            }
            for tag, metric, labels in filters
        ]
    }
    response = httpx.post(
        f"{base}/api/v2/snapshots/{project_id}/data_series_batch", json=body, timeout=30
    )
    response.raise_for_status()
    return response.json()["series"]


@pytest.mark.slow
def test_fraudops_dashboards_serves_the_project_its_panels_and_their_data(
    workspace_with_runs, tmp_path
):
    path, project_id = workspace_with_runs
    port = free_port()
    command = [str(Path(sys.executable).parent / "fraudops"), "dashboards"]
    with (tmp_path / "cli.log").open("w") as log:
        process = subprocess.Popen(
            [*command, "--workspace", str(path), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        try:
            line = _first_line(process, UI_START_TIMEOUT_S)
            base = f"http://{HOST}:{port}"
            assert line.strip() == f"dashboard: {base}/projects/{project_id}"

            projects = httpx.get(f"{base}/api/v2/projects", timeout=30).json()
            assert [(p["id"], p["name"]) for p in projects] == [(project_id, PROJECT_NAME)]
            served = httpx.get(f"{base}/api/v2/dashboards/{project_id}", timeout=30).json()
            assert [panel["title"] for panel in served["panels"]] == [
                panel.title for panel in dashboard(FEATURES).panels
            ]

            share, estimated, realised = _series(
                base,
                project_id,
                ("drift", "DriftedColumnsCount", {"value_type": "share"}),
                ("summary", "MeanValue", {"column": "estimated_recall"}),
                ("summary", "MeanValue", {"column": "realised_recall"}),
            )
            assert [value for value in share["values"] if value is not None] == [0.0, 0.0]
            assert len([v for v in estimated["values"] if v is not None]) == 2
            assert len([v for v in realised["values"] if v is not None]) == 2
            assert httpx.get(line.split(": ", 1)[1].strip(), timeout=30).status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    assert process.returncode == 0, (tmp_path / "cli.log").read_text()
    with pytest.raises(httpx.ConnectError):  # the UI stopped with the command
        httpx.get(f"http://{HOST}:{port}/api/version", timeout=5)
