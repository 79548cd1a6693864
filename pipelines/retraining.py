"""Retraining on drift: matured traffic → new data version → challenger → shadow.

What starts it: a drift decision of the monitoring flow, through ``request_retraining``,
the one place that chooses the launcher. With a Prefect server it emits
``fraudops.drift.detected`` and the ``retrain`` deployment's event trigger runs
``retrain_flow`` (``pipelines.deployments``); without one (event triggers need a real
server) it calls ``retrain_flow`` directly. Either way the flow gets the same parameters.

The flow, in order, each step a gate for the next:

1. at most one retraining at a time: an exclusive ``flock`` on ``<home>/retraining/lock``
   (a file lock works in every launcher and needs no server; several hosts would need a
   shared volume or a Prefect global concurrency limit instead). A second run that finds it
   held ends at once as ``skipped``;
2. cool-down: an automatic run (trigger ``event`` or ``direct``) within
   ``retrain_cooldown_s`` of the last one that got past this point ends as ``skipped``, so
   a burst of drift events trains once. A manual run (``fraudops retrain``, or a run of
   the deployment started by hand, whose ``trigger`` keeps its default ``manual``) is a
   person's request and goes ahead; it records who asked and why;
3. the batch: the traffic journal's days after the newest day in ``data/raw`` whose every
   label has arrived (``fraudops.logs.journal.matured_batch``); none means ``skipped``;
4. validation of that batch as a raw batch, and a check that every file of ``data/raw``
   it joins can be read: a failure raises ``BatchRejected`` — nothing is written, trained
   or registered, and ``champion`` stays;
5. the batch joins ``data/raw`` and becomes a DVC data version (``dvc commit`` + push);
6. learning, as ``learning.mode`` in params.yaml says (docs/learning-modes.md measures
   the three): ``full`` runs the training flow on the new data (the model search, fitted
   from scratch); ``warm_start`` runs it continuing the champion with more boosting rounds
   on the labelled days it has not seen (a full retrain when it cannot). Either way the
   run is tagged with why it ran (trigger, signal, window, monitoring run; for a manual
   run, who asked and their reason) and how it learnt, and registers ``challenger``.
   ``online`` trains nothing: the online learner learns every label as it arrives;
7. serving routes a shadow copy of all traffic to the new model, through the admin API
   with the admin key: ``challenger`` after reloading its models, or the online learner.
   The batch still became a data version, so a later full retrain learns from it too.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import polars as pl
from prefect import flow, get_run_logger

from fraudops.config import Settings, get_settings, load_params
from fraudops.data.datasets import check_raw, read_raw, write_raw
from fraudops.data.schema import TX_DATETIME
from fraudops.data.validation import validate_raw
from fraudops.data.versioning import VersioningError, record_data_version
from fraudops.experiments.routing import CHAMPION as CHAMPION_ONLY
from fraudops.experiments.routing import RoutingConfig, ShadowPolicy
from fraudops.locks import exclusive
from fraudops.logs.database import open_prediction_log
from fraudops.logs.journal import journal_dir, matured_batch
from fraudops.modeling.online import ONLINE_ALIAS
from fraudops.tracking.registry import CHALLENGER
from pipelines.tasks import io_task, step_task
from pipelines.training import DATA_DVC_FILE, quiet_rejected_data, training_flow

DRIFT_EVENT = "fraudops.drift.detected"
MONITOR_RESOURCE = "fraudops.monitor"
TRIGGER_TAG = "fraudops.trigger"
SIGNAL_TAG = "fraudops.signal"
WINDOW_TAG = "fraudops.window_id"
MONITORING_RUN_TAG = "fraudops.monitoring_run"
BATCH_DAYS_TAG = "fraudops.batch_days"
REQUESTED_BY_TAG = "fraudops.requested_by"
REASON_TAG = "fraudops.reason"
#: Who asked, when a manual run does not say (a deployment run started without parameters).
UNKNOWN_REQUESTER = "unknown"
ADMIN_TIMEOUT_S = 30.0

Launcher = Literal["auto", "event", "direct"]
Trigger = Literal["event", "direct", "manual"]
Status = Literal["retrained", "skipped"]


@dataclass(frozen=True)
class RetrainTrigger:
    """Why retraining is asked for: the monitoring run's signal, window and numbers."""

    signal: str
    window_id: str
    monitoring_run_id: str
    reasons: list[str] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retraining run did; ``reason`` says why it stopped where it did."""

    status: Status
    reason: str
    version: str | None = None
    run_id: str | None = None
    data_version: str | None = None
    batch_days: list[str] = field(default_factory=list)
    routing: str | None = None
    learning_mode: str = "full"


def prefect_server_configured() -> bool:
    """Whether flows report to a real Prefect server (the one place event triggers run)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def request_retraining(trigger: RetrainTrigger, launcher: Launcher = "auto") -> str:
    """Ask for retraining: an event for the ``retrain`` deployment, or the flow itself.

    Returns how it was asked (and, when run directly, how the run ended).
    """
    if launcher == "auto":
        launcher = "event" if prefect_server_configured() else "direct"
    if launcher == "event":
        from prefect.events import emit_event

        event = emit_event(
            event=DRIFT_EVENT,
            resource={"prefect.resource.id": MONITOR_RESOURCE},
            payload=asdict(trigger),
        )
        return f"event {event.id}" if event is not None else "event not sent"
    outcome = retrain_flow(
        signal=trigger.signal,
        window_id=trigger.window_id,
        monitoring_run_id=trigger.monitoring_run_id,
        trigger="direct",
    )
    return f"direct: {outcome.status} ({outcome.reason})"


# --- guards ------------------------------------------------------------------------------


def _state_dir(settings: Settings) -> Path:
    folder = settings.home / "retraining"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cooling_down(settings: Settings, now: dt.datetime) -> str | None:
    """Why a retraining may not start now, or None when the cool-down has passed."""
    state = _state_dir(settings) / "last-start.json"
    if not state.exists():
        return None
    last = dt.datetime.fromisoformat(json.loads(state.read_text())["started_at"])
    elapsed = (now - last).total_seconds()
    if elapsed >= settings.retrain_cooldown_s:
        return None
    return (
        f"cool-down: the last retraining started {elapsed:.0f} s ago, "
        f"fewer than retrain_cooldown_s = {settings.retrain_cooldown_s:.0f}"
    )


def mark_started(settings: Settings, now: dt.datetime, why: dict[str, str]) -> None:
    state = _state_dir(settings) / "last-start.json"
    state.write_text(json.dumps({"started_at": now.isoformat(), **why}, indent=2) + "\n")


def _held_back(settings: Settings, now: dt.datetime, trigger: Trigger) -> str | None:
    """Why the cool-down skips this run, or None; it never holds back a manual request.

    The cool-down protects against a storm of automatic triggers; a person who asks for a
    retraining gets it (the lock still keeps it to one run at a time).
    """
    wait = cooling_down(settings, now)
    if wait is None:
        return None
    if trigger == "manual":
        get_run_logger().info("%s; a manual request is not held back by it", wait)
        return None
    get_run_logger().info("skipped: %s", wait)
    return wait


def _request_tags(trigger: Trigger, requested_by: str, reason: str) -> dict[str, str]:
    """Who asked for a manual run and why; automatic runs say why in their other tags."""
    if trigger != "manual":
        return {}
    return {REQUESTED_BY_TAG: requested_by or UNKNOWN_REQUESTER, REASON_TAG: reason}


# --- steps -------------------------------------------------------------------------------


@step_task("collect matured traffic")
def collect_batch(settings: Settings, labels_by: dt.datetime) -> pl.DataFrame:
    engine = open_prediction_log(settings.log_url)
    try:
        batch = matured_batch(journal_dir(settings), engine, settings.raw_dir, labels_by)
    finally:
        engine.dispose()
    days = len(_days(batch))
    get_run_logger().info("%s matured transactions over %d days", f"{batch.height:,}", days)
    return batch


def _days(batch: pl.DataFrame) -> list[str]:
    return sorted({day.isoformat() for day in batch[TX_DATETIME].dt.date().unique()})


@step_task("validate batch")
def validate_batch(
    batch: pl.DataFrame, staging: Path, raw_dir: Path, max_fraud_rate: float
) -> None:
    """Validate the batch as it will be stored: written and read back in the raw layout.

    The files of RAW_DIR are checked first: training reads them all, so an unreadable one
    would fail it only after the batch had joined them as a new data version.
    """
    check_raw(raw_dir)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write_raw(batch, staging)
        validate_raw(read_raw(staging), max_fraud_rate=max_fraud_rate)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@step_task("record data version")
def add_batch(batch: pl.DataFrame, raw_dir: Path, dvc_file: Path) -> str:
    """Append the batch's days to the raw data and record (and push) the new DVC version.

    When DVC fails, the days just written are removed again, so the workspace still
    matches the last recorded version.
    """
    written = write_raw(batch, raw_dir)
    try:
        version = record_data_version(dvc_file, push=True)
    except VersioningError:
        for path in written:
            shutil.rmtree(path.parent, ignore_errors=True)
        raise
    get_run_logger().info("data version %s recorded in %s", version, dvc_file)
    return version


@io_task("shadow the challenger")
def shadow_challenger(settings: Settings) -> str:
    """Reload serving's models, then shadow all traffic to ``challenger``; its version."""
    return _shadow(settings, CHALLENGER, reload=True)


@io_task("shadow the online learner")
def shadow_online(settings: Settings) -> str:
    """Shadow all traffic to the online learner (serving starts it); its version."""
    return _shadow(settings, ONLINE_ALIAS, reload=False)


def _shadow(settings: Settings, alias: str, *, reload: bool) -> str:
    if settings.serving_url is None:
        return "routing unchanged: no serving_url configured"
    if settings.admin_api_key is None or not settings.admin_api_key.get_secret_value():
        raise RuntimeError("switching serving to shadow needs FRAUDOPS_ADMIN_API_KEY")
    headers = {"X-API-Key": settings.admin_api_key.get_secret_value()}
    with httpx.Client(base_url=settings.serving_url, timeout=ADMIN_TIMEOUT_S) as client:
        if reload:
            client.post("/admin/reload", headers=headers).raise_for_status()
        # With the admin key, so the salt is in the answer: the experiment's arms stay put.
        current = client.get("/v1/models", headers=headers).raise_for_status().json()
        configured = RoutingConfig.model_validate(current["routing"]["configured"])
        shadowed = RoutingConfig(
            mode=CHAMPION_ONLY, shadow=ShadowPolicy(alias=alias), salt=configured.salt
        )
        client.put(
            "/admin/routing", headers=headers, json=shadowed.model_dump(mode="json")
        ).raise_for_status()
        models = client.get("/v1/models").raise_for_status().json()["models"]
    version = next(model["version"] for model in models if model["alias"] == alias)
    get_run_logger().info("serving shadows version %s (%s)", version, alias)
    return f"shadow: {alias} version {version}"


@flow(name="retraining")
def retrain_flow(
    signal: str = "manual",
    window_id: str = "",
    monitoring_run_id: str = "",
    trigger: Trigger = "manual",
    requested_by: str = "",
    reason: str = "",
    params_path: Path | None = None,
    project: Path | None = None,
) -> RetrainOutcome:
    """Learn from the traffic whose labels have matured, then shadow the new model.

    SIGNAL, WINDOW_ID and MONITORING_RUN_ID say why (they become tags of the training run);
    TRIGGER says what launched it. A ``manual`` run is a person's request: the cool-down
    does not hold it back, and REQUESTED_BY and REASON are recorded with it. PROJECT is
    the repository holding ``data.dvc`` (default: the working directory).
    """
    quiet_rejected_data()
    settings = get_settings()
    logger = get_run_logger()
    project = project or Path.cwd()
    with exclusive(_state_dir(settings) / "lock") as acquired:
        if not acquired:
            logger.info("skipped: another retraining is in flight")
            return RetrainOutcome("skipped", "another retraining is in flight")
        now = dt.datetime.now(dt.UTC)
        if held := _held_back(settings, now, trigger):
            return RetrainOutcome("skipped", held)
        batch = collect_batch(settings, now)
        if batch.is_empty():
            held = "no new day of traffic has all its labels yet"
            logger.info("skipped: %s", held)
            return RetrainOutcome("skipped", held)
        days = _days(batch)
        why = {
            TRIGGER_TAG: trigger,
            SIGNAL_TAG: signal,
            WINDOW_TAG: window_id,
            MONITORING_RUN_TAG: monitoring_run_id,
            BATCH_DAYS_TAG: f"{days[0]}..{days[-1]}",
            **_request_tags(trigger, requested_by, reason),
        }
        mark_started(settings, now, why)
        params = load_params(params_path or settings.params_path)
        staging = _state_dir(settings) / "staging"
        validate_batch(batch, staging, settings.raw_dir, params.validate_.max_fraud_rate)
        data_version = add_batch(batch, settings.raw_dir, project / DATA_DVC_FILE)
        mode = params.learning.mode
        summary = f"{signal} in window {window_id or '-'}: {len(days)} new days"
        if mode == "online":
            logger.info("learning mode online: no model to train; the online learner shadows")
            return RetrainOutcome(
                status="retrained",
                reason=summary,
                data_version=data_version,
                batch_days=days,
                routing=shadow_online(settings),
                learning_mode=mode,
            )
        trained = training_flow(
            tags=why, params_path=params_path, project=project, learning_mode=mode
        )
        routing = shadow_challenger(settings)
    return RetrainOutcome(
        status="retrained",
        reason=summary,
        version=trained.version,
        run_id=trained.run_id,
        data_version=data_version,
        batch_days=days,
        routing=routing,
        learning_mode=trained.learning_mode,
    )
