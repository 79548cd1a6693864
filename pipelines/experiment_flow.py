"""The experiment flow: a new challenger from shadow to an A/B test to the promotion gate.

Retraining leaves its challenger in shadow; nothing else would ever move it on. The
``experiment/advance`` deployment (``pipelines.deployments``) runs this flow every
interval, and each run takes at most one step, chosen from what it reads afresh: the
registry's aliases and the challenger's tags, the routing policy serving holds, and the
prediction log. No step depends on an earlier run's memory, so a run can be repeated,
skipped or killed at any point and the next one carries on. What a run finds, and does:

* an undecided challenger shadowing the champion: once it has shadow-scored
  ``experiment.shadow_min_scored`` requests, the A/B's start is tagged on its version and
  serving routes ``ab_share`` % of customers to it, the challenger shadowing the rest;
* an undecided challenger in the A/B: once the A/B traffic holds ``ab_min_days``
  simulated days of labels and its plan has a verdict or cannot be met by ``ab_max_days``,
  or once ``ab_max_days`` have passed, the shadow and A/B reports, the promotion flow
  weighing them, then champion-only routing;
* an undecided challenger with the champion alone (no shadow): it is shadowed, which is
  retraining's own last step, had that been lost;
* a decided challenger (or the champion itself) still routed: champion-only routing;
* anything else, a policy set by hand: nothing.

"Simulated days" are read on the transactions' own clock (``tx_datetime``) in the log, so
the rule holds at any replay speed: labelled days run from the A/B's first transaction to
the newest one whose label has arrived. The A/B's length follows ``make demo``'s rule
(``fraudops.local.demo.more_ab_days``). A decision lands on the challenger's version twice:
the promotion flow's tags and run, and the live evidence it weighed
(``fraudops.experiment.*`` tags; the reports' JSON under ``<home>/experiments/v<N>``).

A little over 400 lines: the step chooser and the steps it chooses among read the same
aliases, tags and counts, and split apart each would need the other's reading of them.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from prefect import flow, get_run_logger
from sqlalchemy import Engine, case, exists, func, select

from fraudops.config import ExperimentParams, Params, Settings, get_settings, load_params
from fraudops.data.validation import BatchRejected
from fraudops.experiments.ab_report import ABResult, ab_check, analyse_ab
from fraudops.experiments.promotion_gate import Check
from fraudops.experiments.report_parts import ReportWindow
from fraudops.experiments.routing import CHAMPION as CHAMPION_ONLY
from fraudops.experiments.routing import RoutingConfig, ShadowPolicy
from fraudops.experiments.shadow_report import (
    ShadowReport,
    analyse_shadow,
    read_shadow_window,
    shadow_check,
)
from fraudops.fairness.window_segments import RawHistory, SegmentSource
from fraudops.local.demo import more_ab_days
from fraudops.local.demo_api import route_ab_with_shadow
from fraudops.local.demo_story import ab_facts
from fraudops.locks import exclusive
from fraudops.logs.database import open_prediction_log
from fraudops.logs.tables import labels, predictions
from fraudops.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    DECISION_TAG,
    MlflowClient,
    record_decision,
    version_by_alias,
)
from pipelines.promotion import promotion_flow
from pipelines.tasks import io_task, step_task
from pipelines.training import connect_tracking

AB_STARTED_TAG = "fraudops.experiment.ab_started_at"
EVIDENCE_TAG_PREFIX = "fraudops.experiment."
ADMIN_TIMEOUT_S = 30.0

Phase = Literal["idle", "conclude", "unrouted", "shadow", "ab", "hands_off"]
Step = Literal["nothing", "skipped", "waiting", "shadowed", "ab_started", "decided", "reset"]


@dataclass(frozen=True)
class ExperimentState:
    """What a run reads before it acts: aliases, the challenger's tags, the live routing."""

    champion: str | None
    challenger: str | None
    decided: bool  # the challenger's version carries a promotion decision
    ab_started_at: dt.datetime | None
    routing: RoutingConfig


@dataclass(frozen=True)
class ABProgress:
    """How far the A/B traffic has come, in simulated days on the transactions' clock."""

    labelled_days: float
    traffic_days: float


@dataclass(frozen=True)
class AdvanceOutcome:
    """The step one run took, and why."""

    step: Step
    detail: str
    challenger: str | None = None


def phase_of(state: ExperimentState) -> Phase:
    """Where the experiment of STATE's challenger stands (see the module's table)."""
    routing = state.routing
    shadowed = routing.shadow is not None and routing.shadow.alias == CHALLENGER
    in_ab = routing.mode == "ab" and CHALLENGER in routing.arms
    if state.challenger is None or state.champion is None:
        return "idle"
    if state.decided or state.challenger == state.champion:
        return "conclude" if shadowed or in_ab else "idle"
    if in_ab:
        return "ab"
    if routing.mode == CHAMPION_ONLY:
        if shadowed:
            return "shadow"
        if routing.shadow is None:
            return "unrouted"
    return "hands_off"


def decision_due(
    progress: ABProgress,
    ab: dict[str, object] | None,
    experiment: ExperimentParams,
    label_delay_days: int,
) -> str | None:
    """Why the gate should judge now, or None to let the A/B run on.

    AB is the A/B report's facts (``demo_story.ab_facts``), read only once
    ``worth_a_report`` says so; the length rule is ``make demo``'s (`more_ab_days`).
    """
    days = math.floor(progress.labelled_days)
    if days >= experiment.ab_max_days:
        return f"{days} simulated days of labelled A/B traffic: experiment.ab_max_days reached"
    if progress.traffic_days >= experiment.ab_max_days + label_delay_days:
        return (
            f"{progress.traffic_days:.1f} simulated days of A/B traffic, labels for only "
            f"{progress.labelled_days:.1f}: the labels of ab_max_days should have arrived"
        )
    if ab is None or days < experiment.ab_min_days:
        return None
    if ab["recommendation"] != "need_more_data":
        return f"the A/B test reached its verdict after {days} labelled days"
    if more_ab_days(ab, days, experiment.ab_max_days) == 0:
        return (
            f"after {days} labelled days the A/B plan needs more than experiment.ab_max_days "
            f"({experiment.ab_max_days}) at the rate seen"
        )
    return None


def worth_a_report(progress: ABProgress, experiment: ExperimentParams, delay: int) -> bool:
    """Whether the A/B has come far enough for `decision_due` to say yes."""
    return (
        progress.labelled_days >= experiment.ab_min_days
        or progress.traffic_days >= experiment.ab_max_days + delay
    )


# --- reading the state ----------------------------------------------------------------------


def _admin(settings: Settings) -> tuple[str, dict[str, str]]:
    """Serving's URL and the admin header: routing cannot change without both."""
    key = settings.admin_api_key.get_secret_value() if settings.admin_api_key else ""
    if settings.serving_url is None or not key:
        raise RuntimeError("the experiment needs FRAUDOPS_SERVING_URL and FRAUDOPS_ADMIN_API_KEY")
    return settings.serving_url, {"X-API-Key": key}


@io_task("read experiment state")
def read_state(client: MlflowClient, settings: Settings) -> ExperimentState:
    name = settings.model_name
    champion = version_by_alias(client, name, CHAMPION)
    challenger = version_by_alias(client, name, CHALLENGER)
    url, headers = _admin(settings)
    # With the admin key, so the salt is in the answer and a new policy can keep it.
    models = httpx.get(f"{url}/v1/models", headers=headers, timeout=ADMIN_TIMEOUT_S)
    configured = models.raise_for_status().json()["routing"]["configured"]
    tags = challenger.tags if challenger is not None else {}
    started = tags.get(AB_STARTED_TAG)
    return ExperimentState(
        champion=None if champion is None else str(champion.version),
        challenger=None if challenger is None else str(challenger.version),
        decided=DECISION_TAG in tags,
        ab_started_at=dt.datetime.fromisoformat(started) if started else None,
        routing=RoutingConfig.model_validate(configured),
    )


def shadow_scored(engine: Engine, model_name: str, version: str) -> int:
    """Requests VERSION of MODEL_NAME scored in the shadow, all time."""
    query = (
        select(func.count())
        .select_from(predictions)
        .where(
            predictions.c.is_shadow.is_(True),
            predictions.c.model_name == model_name,
            predictions.c.model_version == version,
        )
    )
    with engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def ab_progress(engine: Engine, since: dt.datetime) -> ABProgress:
    """Simulated days from the first answer logged since SINCE to the newest one, and to
    the newest one whose label has arrived."""
    when = predictions.c.tx_datetime
    labelled = exists().where(labels.c.transaction_id == predictions.c.transaction_id)
    query = select(func.min(when), func.max(when), func.max(case((labelled, when)))).where(
        predictions.c.is_shadow.is_(False), predictions.c.logged_at >= since
    )
    with engine.connect() as connection:
        first, last, last_labelled = connection.execute(query).one()
    day = dt.timedelta(days=1)
    return ABProgress(
        labelled_days=(last_labelled - first) / day if last_labelled is not None else 0.0,
        traffic_days=(last - first) / day if last is not None else 0.0,
    )


# --- the steps ------------------------------------------------------------------------------


@io_task("set routing")
def set_routing(settings: Settings, routing: RoutingConfig, reload: bool = False) -> None:
    """Save ROUTING in serving, after reloading its models when RELOAD (a new champion)."""
    url, headers = _admin(settings)
    with httpx.Client(base_url=url, headers=headers, timeout=ADMIN_TIMEOUT_S) as http:
        if reload:
            http.post("/admin/reload").raise_for_status()
        http.put("/admin/routing", json=routing.model_dump(mode="json")).raise_for_status()


@io_task("tag the A/B's start")
def tag_ab_start(client: MlflowClient, settings: Settings, version: str) -> dt.datetime:
    """Record on VERSION when its A/B began: the window its reports read starts there."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    client.set_model_version_tag(settings.model_name, version, AB_STARTED_TAG, now.isoformat())
    return now


@io_task("route the A/B")
def route_ab(settings: Settings, share: int) -> None:
    """The A/B split with the challenger shadowing the rest, as ``make demo`` routes it."""
    url, headers = _admin(settings)
    route_ab_with_shadow(url, headers["X-API-Key"], share)


@step_task("live reports")
def live_reports(
    engine: Engine, since: dt.datetime, version: str, params: Params, folder: Path
) -> tuple[ABResult, ShadowReport]:
    """The A/B and shadow reports of the A/B window, also written as JSON into FOLDER."""
    window = ReportWindow(start=since, labels_received_by=dt.datetime.now(dt.UTC))
    served = window.read(engine, "served")
    segments = SegmentSource(RawHistory.of(get_settings()), params)
    ab = analyse_ab(served, params.ab, top_k=params.train.top_k, window=window, segments=segments)
    pairs = read_shadow_window(engine, window)
    shadow = analyse_shadow(pairs, params.ab, params.train, shadow_version=version, window=window)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ab.json").write_text(ab.model_dump_json(indent=2) + "\n")
    (folder / "shadow.json").write_text(shadow.model_dump_json(indent=2) + "\n")
    return ab, shadow


def live_evidence(ab: ABResult, shadow: ShadowReport, version: str) -> list[Check]:
    """The reports as gate checks, each only if it judged VERSION alone and has a verdict."""
    checks: list[Check | None] = []
    if ab.arms[1].model_versions == [version]:  # arms: control, then treatment
        checks.append(ab_check(ab))
    if f" v{version} (" in (shadow.shadow_model or ""):
        checks.append(shadow_check(shadow))
    return [check for check in checks if check is not None]


@io_task("record the live evidence")
def record_evidence(
    client: MlflowClient,
    settings: Settings,
    version: str,
    why: str,
    progress: ABProgress,
    reports: tuple[ABResult, ShadowReport],
    folder: Path,
) -> None:
    ab, shadow = reports
    tags = {
        "decided_because": why,
        "labelled_days": f"{progress.labelled_days:.2f}",
        "ab_recommendation": ab.recommendation,
        "ab_reason": ab.reason,
        "shadow_pairs": str(shadow.pairs),
        "shadow_reason": shadow.reason,
        "reports": str(folder),
    }
    for key, value in tags.items():
        client.set_model_version_tag(settings.model_name, version, EVIDENCE_TAG_PREFIX + key, value)


def _judge(
    client: MlflowClient, settings: Settings, version: str, evidence: list[Check], project: Path
) -> str:
    """The promotion flow's decision on VERSION; a version it cannot judge is rejected, so an
    unattended stack never stalls on it."""
    try:
        outcome = promotion_flow(
            challenger_version=version,
            evidence=evidence,
            params_path=settings.params_path,
            project=project,
        )
    except (BatchRejected, LookupError, ValueError) as error:
        reason = f"the promotion gate could not judge it: {error}"
        record_decision(client, settings.model_name, version, "rejected", reason)
        return f"rejected: {reason}"
    return f"{outcome.outcome}: {outcome.reason}"


@flow(name="experiment")
def advance_experiment(project: Path | None = None) -> AdvanceOutcome:
    """Take the challenger's experiment one step further, if its time has come.

    PROJECT is the repository the promotion flow reads the holdout from (default: the
    working directory). One run at a time: a run that finds another in flight ends at once.
    """
    settings = get_settings()
    folder = settings.home / "experiments"
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(folder / "lock") as acquired:
        if acquired:
            outcome = _advance(settings, project or Path.cwd())
        else:
            outcome = AdvanceOutcome("skipped", "another run of the experiment is in flight")
    get_run_logger().info("%s: %s", outcome.step, outcome.detail)
    return outcome


def _advance(settings: Settings, project: Path) -> AdvanceOutcome:
    params = load_params(settings.params_path)
    client = connect_tracking(settings)
    state = read_state(client, settings)
    phase, version = phase_of(state), state.challenger
    if phase == "idle":
        return AdvanceOutcome("nothing", "no challenger waits for a decision", version)
    if phase == "hands_off":
        return AdvanceOutcome("nothing", "routing was set by hand: left alone", version)
    if phase == "conclude":
        set_routing(settings, RoutingConfig(salt=state.routing.salt))
        return AdvanceOutcome("reset", "champion-only routing after the decision", version)
    if phase == "unrouted":
        shadowed = RoutingConfig(shadow=ShadowPolicy(alias=CHALLENGER), salt=state.routing.salt)
        set_routing(settings, shadowed, reload=True)
        return AdvanceOutcome("shadowed", f"version {version} shadows the champion", version)
    assert version is not None  # phases shadow and ab have a challenger
    engine = open_prediction_log(settings.log_url)
    try:
        if phase == "shadow":
            return _after_shadow(client, settings, engine, version, params.experiment)
        # An A/B routed by hand has no start on record: its clock starts now.
        since = state.ab_started_at or tag_ab_start(client, settings, version)
        return _after_ab(client, settings, engine, state, since, params, project)
    finally:
        engine.dispose()


def _after_shadow(
    client: MlflowClient,
    settings: Settings,
    engine: Engine,
    version: str,
    experiment: ExperimentParams,
) -> AdvanceOutcome:
    scored = shadow_scored(engine, settings.model_name, version)
    if scored < experiment.shadow_min_scored:
        detail = f"{scored} of {experiment.shadow_min_scored} shadow-scored requests"
        return AdvanceOutcome("waiting", detail, version)
    # Tagged first: a route that fails is tried again by the next run, which finds the
    # challenger still shadowed and tags a fresh start.
    started = tag_ab_start(client, settings, version)
    route_ab(settings, experiment.ab_share)
    detail = f"A/B from {started:%H:%M:%S}: {experiment.ab_share}% of customers, shadow on the rest"
    return AdvanceOutcome("ab_started", detail, version)


def _after_ab(
    client: MlflowClient,
    settings: Settings,
    engine: Engine,
    state: ExperimentState,
    since: dt.datetime,
    params: Params,
    project: Path,
) -> AdvanceOutcome:
    version = str(state.challenger)
    delay = params.features.label_delay_days
    progress = ab_progress(engine, since)
    waiting = AdvanceOutcome(
        "waiting",
        f"{progress.labelled_days:.1f} labelled of {progress.traffic_days:.1f} simulated "
        "days of A/B traffic",
        version,
    )
    if not worth_a_report(progress, params.experiment, delay):
        return waiting
    folder = settings.home / "experiments" / f"v{version}"
    reports = live_reports(engine, since, version, params, folder)
    why = decision_due(progress, ab_facts(folder / "ab.json"), params.experiment, delay)
    if why is None:
        return waiting
    record_evidence(client, settings, version, why, progress, reports, folder)
    decision = _judge(client, settings, version, live_evidence(*reports, version), project)
    # Reloaded first, so a promoted challenger already answers as the champion.
    set_routing(settings, RoutingConfig(salt=state.routing.salt), reload=True)
    return AdvanceOutcome("decided", f"{decision} ({why})", version)
