"""Dashboards built by code, and `fraudops dashboards` serving them over HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from evidently.ui.service.base import SeriesFilter
from evidently.ui.service.storage.local import create_local_project_manager

from fraudops.config import Params
from fraudops.features.definitions import feature_columns
from fraudops.local.servers import HOST, free_port
from fraudops.modeling.steps import SCORE
from monitoring.analysis import MonitoringResult, analyse_window, check_estimate
from monitoring.scenarios import ScenarioWorld, simulate_world, without_labels
from monitoring.workspace import (
    PROJECT_NAME,
    dashboard,
    ensure_project,
    open_workspace,
    record_realised,
    record_window,
    summary_numbers,
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
def world() -> ScenarioWorld:
    return simulate_world(seed=2, customers=1500)


@pytest.fixture(scope="module")
def workspace_with_runs(
    world: ScenarioWorld, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """Two weekly windows: one analysed before its labels (then checked once they land),
    one with its labels."""
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


def _analyse(world: ScenarioWorld, scenario: str, week: int) -> MonitoringResult:
    return analyse_window(
        world.reference,
        world.windows[scenario],
        threshold=world.threshold,
        params=PARAMS,
        window_id=f"{scenario} {week}",
        training_metrics=world.training_metrics,
        timestamp=FIRST_WINDOW + dt.timedelta(days=7 * week),
    )


def _expected(result: MonitoringResult) -> dict[tuple[str, frozenset], float]:
    """Each number a panel may plot for RESULT's window, keyed by metric and labels."""
    decision = result.decision
    drift = decision.data_drift
    assert drift is not None
    numbers = {
        ("DriftedColumnsCount", frozenset({"value_type": "share"}.items())): drift.drifted_share,
        **{
            ("ValueDrift", frozenset({"column": column.column}.items())): column.score
            for column in (*drift.features, drift.score)
        },
        **{
            ("MeanValue", frozenset({"column": name}.items())): value
            for name, value in summary_numbers(decision).items()
        },
    }
    for metric in result.snapshots["drift"].dict()["metrics"]:  # the score's mean, quantiles
        config = metric["config"]
        kind = config["type"].rsplit(":", 1)[1]
        if kind in ("MeanValue", "QuantileValue") and config["column"] == SCORE:
            labels = {"column": SCORE} | (
                {"quantile": str(config["quantile"])} if kind == "QuantileValue" else {}
            )
            numbers[(kind, frozenset(labels.items()))] = metric["value"]
    return numbers


def _panel_series(path: Path, project_id: str) -> dict[str, list[list[float | None] | None]]:
    """Per panel, each of its values' series as the UI reads the workspace (None: no series)."""
    storage = create_local_project_manager(str(path), autorefresh=False).data_storage
    served = {}
    for panel in dashboard(FEATURES).panels:
        filters = [
            SeriesFilter(
                tags=value.tags,
                metadata=value.metadata,
                metric=value.metric,
                metric_labels=value.metric_labels,
            )
            for value in panel.values
        ]
        response = asyncio.run(storage.get_data_series(uuid.UUID(project_id), filters, None, None))
        by_filter = {series.filter_index: series.values for series in response.series}
        served[panel.title] = [by_filter.get(index) for index in range(len(panel.values))]
    return served


def _metric_key(value) -> tuple[str, frozenset]:
    return value.metric.rsplit(":", 1)[1], frozenset(value.metric_labels.items())


def test_each_panel_plots_the_windows_numbers_on_an_axis_that_can_be_read(world, tmp_path):
    workspace = open_workspace(tmp_path / "workspace")
    project = ensure_project(workspace, FEATURES)
    shifted = _analyse(world, "amount_shift", 0)
    assert 0 < shifted.decision.data_drift.drifted_share < 1
    record_window(workspace, project, shifted)
    panels = {panel.title: panel for panel in dashboard(FEATURES).panels}

    served = _panel_series(tmp_path / "workspace", str(project.id))
    expected = _expected(shifted)
    for title, series in served.items():
        wanted = [expected.get(_metric_key(value)) for value in panels[title].values]
        assert series == [None if number is None else [number] for number in wanted], title
        # One window: a line chart's axis shows its only value rounded to a whole number.
        plotted = {number for number in wanted if number is not None}
        assert panels[title].plot_params["plot_type"] != "line" or len(plotted) > 1, title

    calm = _analyse(world, "none", 1)
    record_window(workspace, project, calm)
    served = _panel_series(tmp_path / "workspace", str(project.id))
    both = (expected, _expected(calm))
    assert served["Share of drifted features"][0] == [
        result.decision.data_drift.drifted_share for result in (shifted, calm)
    ]
    for title, series in served.items():
        for value, values in zip(panels[title].values, series, strict=True):
            wanted = _trimmed([numbers.get(_metric_key(value)) for numbers in both])
            assert values == (wanted or None), (title, value.legend)


def _trimmed(values: list[float | None]) -> list[float | None]:
    """A series as the UI stores it: windows after its last value are left out."""
    while values and values[-1] is None:
        values = values[:-1]
    return values
