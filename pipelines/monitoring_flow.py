"""The monitoring flow: one window of served traffic against the champion's training sample.

Steps: find the champion and its reference sample (logged with its training run), read the
window from the prediction log with the labels known by then, analyse it
(``monitoring.analysis``), then record the outcome three ways — HTML and JSON under
``monitoring/reports/<run>/``, an MLflow run of type ``monitoring`` with every number as a
metric and the reports as artifacts (with the per-segment fairness tables, beside the
training run's own), and snapshots in the Evidently workspace the dashboards read. The
segments read the customers' history from ``data/raw`` and the traffic replay's journal;
without them the run notes why and goes on. A gap alarm (docs/fairness.md) is logged and
tagged, and asks for no retraining. A drift signal then asks for retraining
(``pipelines.retraining``): an event with a Prefect server, a direct call without one.

A window that cannot be analysed (an Evidently failure, a log of another feature set)
fails this run with a message naming the window and is recorded as a failed MLflow run;
nothing is kept between runs, so the next scheduled run starts clean. Serving is never
touched: the flow only reads the prediction log.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from prefect import flow, get_run_logger

from fraudops.config import Params, get_settings, load_params
from fraudops.data.schema import TX_DATETIME
from fraudops.experiments.report_parts import ReportWindow
from fraudops.fairness.segment_report import SegmentReport
from fraudops.fairness.window_segments import RawHistory
from fraudops.features.definitions import feature_columns
from fraudops.health.findings import DriftDecision
from fraudops.logs.database import open_prediction_log
from fraudops.tracking.registry import CHAMPION, MlflowClient, outage_named, version_by_alias
from fraudops.tracking.runs import (
    RUN_TYPE_TAG,
    THRESHOLD_TAG,
    download_run_artifact,
    load_segment_report,
    recorded_run,
)
from monitoring.analysis import (
    MonitoringError,
    MonitoringResult,
    SegmentInputs,
    analyse_window,
    check_estimate,
)
from monitoring.reports import load_decision, run_name, write_reports
from monitoring.workspace import ensure_project, open_workspace, record_realised, record_window
from pipelines.retraining import Launcher, RetrainTrigger, request_retraining
from pipelines.tasks import io_task, step_task
from pipelines.training import connect_tracking

#: Where the training run keeps the monitoring baseline (``fraudops.tracking.runs._log_files``).
REFERENCE_ARTIFACT = "reference/reference.parquet"
WINDOW_TAG = "fraudops.window_id"
SIGNAL_TAG = "fraudops.signal"
MONITORED_VERSION_TAG = "fraudops.monitored_version"
ERROR_TAG = "fraudops.error"
GAP_ALARM_TAG = "fraudops.gap_alarm"
#: Beside each run's reports: the window it read and the threshold it judged with, so a
#: later run can read the same window again once its labels have arrived.
WINDOW_FILE = "window.json"
#: Written once a past window's estimate was compared with its realised quality.
REALISED_FILE = "realised.json"
#: Training-run metrics that are validation-fold numbers, not the test period's.
_VALIDATION_PREFIX = "val_"


class ReferenceMissing(LookupError):
    """The champion's training run holds no reference sample to compare traffic with."""


@dataclass(frozen=True)
class Baseline:
    """The champion as monitoring sees it: its threshold, reference sample and test metrics."""

    version: str
    run_id: str
    threshold: float
    reference: pd.DataFrame
    training_metrics: dict[str, float]
    fairness: SegmentReport | None = None


@dataclass(frozen=True)
class MonitoringOutcome:
    """The typed decision, where its numbers are recorded, and how retraining was asked."""

    decision: DriftDecision
    run_id: str
    report_dir: Path
    champion_version: str
    retraining: str | None = None


def _worth_retrying(error: object) -> bool:
    """A server hiccup is; a champion without a reference sample stays so."""
    return not isinstance(error, ReferenceMissing)


@io_task(
    "find champion baseline",
    retry_condition_fn=lambda _task, _run, state: _worth_retrying(state.data),
)
def find_baseline(client: MlflowClient, name: str) -> Baseline:
    """The champion's reference sample and test metrics; a clear error when it has none."""
    champion = version_by_alias(client, name, CHAMPION)
    if champion is None:
        raise ReferenceMissing(f"{name!r} has no {CHAMPION}: train and register a model first")
    if champion.run_id is None:
        raise ReferenceMissing(f"{name!r} version {champion.version} was registered without a run")
    run = client.get_run(champion.run_id)
    folder, _, file = REFERENCE_ARTIFACT.rpartition("/")
    stored = {Path(item.path).name for item in client.list_artifacts(run.info.run_id, folder)}
    if file not in stored:
        raise ReferenceMissing(
            f"model {name!r} version {champion.version} (run {run.info.run_id}) has no "
            f"reference sample at {REFERENCE_ARTIFACT}: retrain it to monitor it"
        )
    with tempfile.TemporaryDirectory() as scratch, outage_named(client.tracking_uri):
        path = download_run_artifact(run.info.run_id, REFERENCE_ARTIFACT, Path(scratch))
        reference = pd.read_parquet(path)
        fairness = load_segment_report(run.info.run_id)
    metrics = {
        key: value
        for key, value in run.data.metrics.items()
        if not key.startswith(_VALIDATION_PREFIX)
    }
    return Baseline(
        version=str(champion.version),
        run_id=run.info.run_id,
        threshold=float(run.data.tags[THRESHOLD_TAG]),
        reference=reference,
        training_metrics=metrics,
        fairness=fairness,
    )


@step_task("read window")
def read_window(window: ReportWindow) -> pd.DataFrame:
    engine = open_prediction_log(get_settings().log_url)
    try:
        return window.read(engine, "served")
    finally:
        engine.dispose()


@step_task("read customer history")
def read_segment_inputs(baseline: Baseline) -> SegmentInputs:
    """The customers' raw history (data/raw and the replay journal) and the training
    report; a missing or unreadable history is a reason, not a failure."""
    return SegmentInputs(RawHistory.of(get_settings()), baseline.fairness)


def window_name(frame: pd.DataFrame) -> str:
    """``<first day>_<last day>_<rows>``, from the transactions' own clock."""
    if frame.empty:
        return "empty"
    times = pd.to_datetime(frame[TX_DATETIME])
    return f"{times.min():%Y%m%d}_{times.max():%Y%m%d}_{len(frame)}rows"


@step_task("analyse window")
def analyse(
    baseline: Baseline,
    current: pd.DataFrame,
    params: Params,
    window_id: str,
    segments: SegmentInputs | None = None,
) -> MonitoringResult:
    result = analyse_window(
        baseline.reference,
        current,
        threshold=baseline.threshold,
        params=params,
        window_id=window_id,
        training_metrics=baseline.training_metrics,
        segments=segments,
    )
    decision = result.decision
    logger = get_run_logger()
    logger.info(
        "window %s: %s (%s)", window_id, decision.signal, "; ".join(decision.reasons) or "-"
    )
    if decision.segment_gaps is not None and decision.segment_gaps.alarm:
        logger.warning(
            "window %s: segment gap alarm: %s",
            window_id,
            "; ".join(decision.segment_gaps.alarms),
        )
    return result


@io_task("record monitoring run")
def record(
    result: MonitoringResult, baseline: Baseline, window: ReportWindow, current: pd.DataFrame
) -> tuple[str, Path]:
    """Reports on disk, the MLflow monitoring run, and the workspace snapshots."""
    settings = get_settings()
    decision = result.decision
    with recorded_run(f"monitoring {decision.window_id}") as run:
        folder = write_reports(
            result, settings.monitoring_reports_dir, f"{run_name(decision)}-{run.run_id[:8]}"
        )
        run.tags(
            _tags(decision.window_id, baseline)
            | {SIGNAL_TAG: decision.signal, GAP_ALARM_TAG: str(decision.gap_alarm).lower()}
        )
        run.params(_window_params(window))
        run.metrics(_finite(decision.metrics()))
        gap_alarms = decision.segment_gaps.alarms if decision.segment_gaps else ()
        why = {
            "reasons": list(decision.reasons),
            "gap_alarms": list(gap_alarms),
            "notes": list(decision.notes),
        }
        run.document(why, "why.json")
        if result.segments is not None:
            run.segments(result.segments)
        window_file = {
            "window": fixed_window(window, current).model_dump(mode="json"),
            "threshold": baseline.threshold,
        }
        (folder / WINDOW_FILE).write_text(json.dumps(window_file, indent=2) + "\n")
        run.folder(folder, artifact_path="reports")
    workspace = open_workspace(settings.monitoring_workspace)
    project = ensure_project(workspace, feature_columns(load_params(settings.params_path).features))
    record_window(workspace, project, result)
    return run.run_id, folder


@step_task("check past estimates")
def check_past_estimates(params: Params) -> int:
    """Compare each earlier window's CBPE estimate with its realised quality, once.

    A window is read again with the labels received since; while it still lacks the labels
    to judge, it waits for a later run. Returns how many windows were settled now. A window
    that cannot be read again is logged and skipped: it must not stop today's run.
    """
    settings = get_settings()
    pending = [
        folder
        for folder in sorted(settings.monitoring_reports_dir.glob("*"))
        if (folder / WINDOW_FILE).exists() and not (folder / REALISED_FILE).exists()
    ]
    if not pending:
        return 0
    logger = get_run_logger()
    workspace = open_workspace(settings.monitoring_workspace)
    project = ensure_project(workspace, feature_columns(params.features))
    engine = open_prediction_log(settings.log_url)
    settled = 0
    try:
        for folder in pending:
            decision = load_decision(folder)
            saved = json.loads((folder / WINDOW_FILE).read_text())
            window = ReportWindow.model_validate(saved["window"]).model_copy(
                update={"labels_received_by": dt.datetime.now(dt.UTC)}
            )
            try:
                current = window.read(engine, "served")
                checks = check_estimate(
                    decision, current, threshold=saved["threshold"], params=params
                )
            except MonitoringError as error:
                logger.warning("past window %s not checked: %s", decision.window_id, error)
                continue
            if decision.estimate is not None and not checks:
                continue  # its labels are not all in yet
            if checks:
                record_realised(workspace, project, decision, checks)
            rows = [check.model_dump() | {"within_band": check.within_band} for check in checks]
            (folder / REALISED_FILE).write_text(json.dumps(rows, indent=2) + "\n")
            settled += 1
    finally:
        engine.dispose()
    return settled


def fixed_window(window: ReportWindow, current: pd.DataFrame) -> ReportWindow:
    """The same rows by time bounds: "the newest N" read later would be other rows."""
    if window.last_n is None or current.empty:
        return window
    times = current[window.time_column]
    return window.model_copy(
        update={
            "start": times.min().to_pydatetime(),
            "end": times.max().to_pydatetime() + dt.timedelta(microseconds=1),
            "last_n": None,
        }
    )


def record_failure(error: MonitoringError, baseline: Baseline, window: ReportWindow) -> str:
    """A failed MLflow run naming the window and the step, so the failure is on record."""
    with recorded_run(f"monitoring {error.window_id} (failed)", failed=True) as run:
        run.tags(_tags(error.window_id, baseline) | {ERROR_TAG: str(error)[:5000]})
        run.params(_window_params(window))
    return run.run_id


def _tags(window_id: str, baseline: Baseline) -> dict[str, str]:
    return {
        RUN_TYPE_TAG: "monitoring",
        WINDOW_TAG: window_id,
        MONITORED_VERSION_TAG: baseline.version,
        "fraudops.reference_run": baseline.run_id,
    }


def _window_params(window: ReportWindow) -> dict[str, str]:
    return {f"window.{key}": str(value) for key, value in window.model_dump(mode="json").items()}


def _finite(numbers: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in numbers.items() if math.isfinite(value)}


@flow(name="monitoring")
def monitoring_flow(
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    last_n: int | None = None,
    by_transaction_time: bool = False,
    labels_by: dt.datetime | None = None,
    window_id: str | None = None,
    on_drift: Launcher | Literal["none"] = "auto",
    params_path: Path | None = None,
) -> MonitoringOutcome:
    """Analyse one window of served traffic; on drift, ask for retraining.

    The window is ``since <= time < until`` on logging time (or on the transactions' own
    clock with BY_TRANSACTION_TIME), optionally only its LAST_N newest predictions, with the
    labels received by LABELS_BY (default: now). ON_DRIFT picks the launcher of
    retraining: ``auto`` (an event with a Prefect server, else a direct call), ``event``,
    ``direct``, or ``none``.
    """
    settings = get_settings()
    params = load_params(params_path or settings.params_path)
    client = connect_tracking(settings)
    baseline = find_baseline(client, settings.model_name)
    window = ReportWindow(
        start=since,
        end=until,
        last_n=last_n,
        time_column="tx_datetime" if by_transaction_time else "logged_at",
        labels_received_by=labels_by or dt.datetime.now(dt.UTC),
    )
    current = read_window(window)
    window_id = window_id or window_name(current)
    segments = read_segment_inputs(baseline)
    try:
        result = analyse(baseline, current, params, window_id, segments)
    except MonitoringError as error:
        run_id = record_failure(error, baseline, window)
        get_run_logger().error(
            "window %s not analysed (MLflow run %s): %s", window_id, run_id, error
        )
        raise
    check_past_estimates(params)
    run_id, folder = record(result, baseline, window, current)
    decision = result.decision
    launched = None
    if decision.is_drift and on_drift != "none":
        trigger = RetrainTrigger(
            signal=decision.signal,
            window_id=decision.window_id,
            monitoring_run_id=run_id,
            reasons=list(decision.reasons),
            numbers=_finite(decision.metrics()),
        )
        launched = request_retraining(trigger, on_drift)
    return MonitoringOutcome(decision, run_id, folder, baseline.version, launched)
