"""The Evidently workspace: one project, its dashboard built by code, and the UI process.

Every monitoring run adds its snapshots to the project: ``drift`` and ``quality`` (the
Evidently reports) and ``summary``, a one-row dataset whose columns are the run's own
numbers (window volume, fraud rate, realised, estimated and training-time quality). The
summary is how numbers Evidently does not compute — NannyML's estimate, the window size
before sampling — reach the dashboard: each column becomes a ``MeanValue`` series. Once
the labels of a past window arrive, ``record_realised`` adds a ``summary`` snapshot at
that window's time with the realised quality, beside the estimate made a week earlier.

The dashboard is rebuilt from code on every ``ensure_project``: panel and tab ids derive
from their titles, so saving it again is a no-op and a fresh workspace needs no clicks.

A panel whose lines can all hold one value (one window, or one series with a value) is
drawn as bars. The UI's line chart scales its y axis to the values alone: for a single
value it shows one tick, that value rounded to a whole number, so a share of 0.4 reads as
0 and a precision of 0.18 as 0. Bars start at zero, so their axis always has a span.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import MeanValue
from evidently.sdk.models import DashboardModel, DashboardPanelPlot, DashboardTabModel, PanelMetric
from evidently.sdk.panels import bar_plot_panel, counter_panel, line_plot_panel
from evidently.ui.workspace import Project, SnapshotRef, Workspace

from fraudops.health.findings import DriftDecision, EstimateCheck
from fraudops.local.servers import HOST, ServerProcess, _venv_executable
from fraudops.modeling.steps import SCORE
from monitoring.analysis import MonitoringResult
from monitoring.drift import SCORE_QUANTILES

PROJECT_NAME = "fraudops monitoring"
DEFAULT_PORT = 8085
#: Quality metrics shown realised, estimated and at training time: ``evaluate`` names and
#: panel titles.
PERFORMANCE_METRICS = {
    "precision": "Precision",
    "recall": "Recall",
    "average_precision": "Average precision",
    "roc_auc": "ROC AUC",
}
SUMMARY_TAG = "summary"
_IDS = uuid.UUID("5f0c6f0e-8a43-4c55-9d55-2b8f3f1c9a10")  # namespace of panel and tab ids


def open_workspace(path: Path) -> Workspace:
    path.mkdir(parents=True, exist_ok=True)
    return Workspace.create(str(path))


def ensure_project(workspace: Workspace, features: Sequence[str]) -> Project:
    """The monitoring project, created if absent, with its dashboard (re)built by code."""
    found = workspace.search_project(PROJECT_NAME)
    project = (
        found[0]
        if found
        else workspace.create_project(
            PROJECT_NAME, description="Drift and quality of the served fraud model, per window."
        )
    )
    workspace.save_dashboard(project.id, dashboard(features))
    return project


def dashboard(features: Sequence[str]) -> DashboardModel:
    """Tabs of panels: drift, performance (realised vs estimated), traffic."""
    tabs = {
        "Drift": [
            _bars(
                "Share of drifted features",
                [_drift("DriftedColumnsCount", {"value_type": "share"}, "drifted share")],
            ),
            _line(
                "Drift score per feature",
                [_drift("ValueDrift", {"column": name}, name) for name in features],
                "Normed Wasserstein (numeric) or Jensen-Shannon (binary) distance.",
            ),
            _bars("Score drift", [_drift("ValueDrift", {"column": SCORE}, "score drift")]),
            _line(
                "Score distribution",
                [_drift("MeanValue", {"column": SCORE}, "mean")]
                + [
                    _drift("QuantileValue", {"column": SCORE, "quantile": str(q)}, f"p{q * 100:g}")
                    for q in SCORE_QUANTILES
                ],
                "Mean and quantiles of the model score in each window (sampled rows).",
            ),
        ],
        "Performance": [
            _bars(
                f"{title}: realised vs estimated",
                [
                    _summary(f"{kind}_{metric}", kind)
                    for kind in ("realised", "estimated", "training")
                ],
                "Realised on labelled rows; estimated by CBPE from scores; at training time.",
            )
            for metric, title in PERFORMANCE_METRICS.items()
        ],
        "Traffic": [
            counter_panel(
                "Windows with a drift signal",
                [_summary("drift_signal", "windows")],
                aggregation="sum",
                size="half",
            ),
            _bars(
                "Traffic volume",
                [_summary("window_rows", "served rows"), _summary("labelled_rows", "labelled")],
            ),
            _bars(
                "Fraud rate",
                [
                    _summary("fraud_rate", "labelled rows"),
                    _summary("expected_fraud_rate", "expected"),
                ],
                "Expected: the mean calibrated fraud probability of the window's scores.",
            ),
        ],
    }
    panels = [_with_stable_id(panel) for group in tabs.values() for panel in group]
    by_title = {panel.title: panel.id for panel in panels}
    return DashboardModel(
        tabs=[
            DashboardTabModel(
                id=uuid.uuid5(_IDS, f"tab:{title}"),
                title=title,
                panels=[by_title[panel.title] for panel in group],
            )
            for title, group in tabs.items()
        ],
        panels=panels,
    )


def _line(
    title: str, values: list[PanelMetric], description: str | None = None
) -> DashboardPanelPlot:
    return line_plot_panel(title, values, description=description)


def _bars(
    title: str, values: list[PanelMetric], description: str | None = None
) -> DashboardPanelPlot:
    """Bars side by side per window, for the panels a single value may fill (see above)."""
    return bar_plot_panel(title, values, description=description)


def _drift(metric: str, labels: dict[str, str], legend: str) -> PanelMetric:
    return PanelMetric(metric=metric, metric_labels=labels, tags=["drift"], legend=legend)


def _summary(column: str, legend: str) -> PanelMetric:
    return PanelMetric(
        metric="MeanValue", metric_labels={"column": column}, tags=[SUMMARY_TAG], legend=legend
    )


def _with_stable_id(panel: DashboardPanelPlot) -> DashboardPanelPlot:
    return panel.copy(update={"id": uuid.uuid5(_IDS, f"panel:{panel.title}")})


# --- runs --------------------------------------------------------------------------------


def record_window(
    workspace: Workspace, project: Project, result: MonitoringResult
) -> list[SnapshotRef]:
    """Add a run's Evidently snapshots and its summary to the project (data not stored)."""
    decision = result.decision
    refs = [
        workspace.add_run(
            project.id, snapshot, include_data=False, name=f"{name} {decision.window_id}"
        )
        for name, snapshot in result.snapshots.items()
    ]
    summary = summary_snapshot(summary_numbers(decision), decision, tags=["estimated"])
    refs.append(
        workspace.add_run(
            project.id, summary, include_data=False, name=f"summary {decision.window_id}"
        )
    )
    return refs


def record_realised(
    workspace: Workspace, project: Project, decision: DriftDecision, checks: Sequence[EstimateCheck]
) -> SnapshotRef:
    """Add a past window's realised quality, at that window's time, beside its estimate."""
    numbers = {f"realised_{check.metric}": check.realised for check in checks}
    snapshot = summary_snapshot(numbers, decision, tags=["realised"])
    return workspace.add_run(
        project.id, snapshot, include_data=False, name=f"realised {decision.window_id}"
    )


def summary_numbers(decision: DriftDecision) -> dict[str, float]:
    """The run's numbers that the dashboard plots from the summary snapshot."""
    counts = decision.counts
    numbers = {
        "window_rows": counts.rows,
        "labelled_rows": counts.labelled_rows,
        "drift_signal": float(decision.is_drift),
    }
    if counts.labelled_rows:
        numbers["fraud_rate"] = counts.labelled_frauds / counts.labelled_rows
    if decision.estimate:
        numbers["expected_fraud_rate"] = decision.estimate.expected_fraud_rate
        numbers |= _prefixed("estimated", decision.estimate.values)
    if decision.quality:
        numbers |= _prefixed("realised", decision.quality.realised)
        numbers |= _prefixed("training", decision.quality.training)
    return {name: float(value) for name, value in numbers.items()}


def _prefixed(kind: str, values: Mapping[str, float]) -> dict[str, float]:
    return {
        f"{kind}_{metric}": values[metric] for metric in PERFORMANCE_METRICS if metric in values
    }


def summary_snapshot(
    numbers: Mapping[str, float], decision: DriftDecision, *, tags: list[str]
) -> Snapshot:
    """A snapshot of one row whose ``MeanValue`` per column is each number itself."""
    row = pd.DataFrame([dict(numbers)])
    definition = DataDefinition(numerical_columns=list(numbers))
    return Report([MeanValue(column=name) for name in numbers]).run(
        Dataset.from_pandas(row, data_definition=definition),
        None,
        timestamp=decision.timestamp,
        metadata={"window_id": decision.window_id, "signal": decision.signal},
        tags=[SUMMARY_TAG, *tags],
    )


# --- the UI ------------------------------------------------------------------------------


class EvidentlyUI(ServerProcess):
    """``evidently ui`` on a workspace folder (first answer after 15-25 s, about 375 MB).

    Runs added by other processes appear without a restart. ``GIT_COMMIT`` answers the
    UI's version endpoint, which otherwise runs ``git`` on every request.
    """

    name = "evidently-ui"
    health_path = "/api/version"

    def __init__(
        self,
        workspace: Path,
        log_dir: Path,
        port: int | None = None,
        startup_timeout: float = 180.0,
        host: str = HOST,
    ) -> None:
        super().__init__(log_dir, port, startup_timeout)
        self.workspace = Path(workspace).resolve()
        # Where it listens; it is probed on 127.0.0.1, which 0.0.0.0 (a container) covers.
        self.host = host

    def command(self) -> list[str]:
        return [
            _venv_executable("evidently"),
            "ui",
            "--workspace",
            str(self.workspace),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]

    def extra_env(self) -> Mapping[str, str]:
        return {"GIT_COMMIT": f"evidently-{version('evidently')}"}

    def project_url(self, project: Project) -> str:
        return f"{self.url}/projects/{project.id}"
