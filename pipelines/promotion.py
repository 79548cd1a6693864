"""The promotion flow: challenger against champion on one holdout, then move ``champion``.

Both models are loaded from the registry and scored on the same rows: the final test
period of the current data, with the same features and the same metric code as training,
and the same per-segment fairness report.
`fraudops.experiments.promotion_gate` turns the numbers into checks and a decision; callers may add
evidence of their own (an A/B result, shadow agreement) as extra checks.

Every decision is written twice: as an MLflow run in the experiment (all holdout metrics
of both models, the tolerances, the checks) and as tags on the challenger's version
(`fraudops.tracking.registry.record_decision`), so the registry alone explains each alias move.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import polars as pl
from prefect import flow, get_run_logger

from fraudops.config import Params, get_settings, load_params
from fraudops.data.split import TimeSplit, final_split
from fraudops.experiments.promotion_gate import (
    Check,
    GateDecision,
    decide,
    fairness_check,
    holdout_checks,
)
from fraudops.fairness.segment_report import segment_report
from fraudops.modeling import steps
from fraudops.tracking import logged_models, runs
from fraudops.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    DECISION_TAG,
    MlflowClient,
    ModelVersion,
    promote,
    record_decision,
    version_by_alias,
)
from pipelines.tasks import io_task, step_task
from pipelines.training import (
    connect_tracking,
    features_of,
    load_data,
    locate_data,
    validate_data,
)

#: Version tag pointing at the MLflow run that holds a decision's full numbers.
DECISION_RUN_TAG = "fraudops.decision_run"

Outcome = Literal["promoted", "rejected", "unchanged"]


@dataclass(frozen=True)
class PromotionOutcome:
    """The decision and where ``champion`` points after it."""

    outcome: Outcome
    champion: str
    challenger: str
    reason: str
    run_id: str | None
    numbers: dict[str, float]


@io_task("find versions")
def find_versions(
    client: MlflowClient, name: str, challenger_version: str | None
) -> tuple[ModelVersion | None, ModelVersion]:
    """The champion and the version to judge: CHALLENGER_VERSION, or the ``challenger``."""
    champion = version_by_alias(client, name, CHAMPION)
    if challenger_version is not None:
        return champion, client.get_model_version(name, str(challenger_version))
    challenger = version_by_alias(client, name, CHALLENGER)
    if challenger is None:
        raise LookupError(f"{name!r} has no {CHALLENGER} version: train a model first")
    return champion, challenger


@step_task("holdout period")
def holdout_period(features: pl.DataFrame, params: Params) -> TimeSplit:
    """The final split of the data; its test period (known-compromised cards removed, as in
    training) is the holdout."""
    split = final_split(features, params.train)
    get_run_logger().info(
        "holdout %s..%s: %s transactions",
        split.test_start,
        split.test_end,
        f"{split.test.height:,}",
    )
    return split


@dataclass(frozen=True)
class HoldoutResult:
    """One version on the holdout: every metric, and its segment gaps (rows of
    `SegmentReport.gaps`)."""

    metrics: dict[str, float]
    gaps: list[dict[str, object]]


@io_task("score version", task_run_name="score version {version}")
def score_version(
    name: str, version: str, split: TimeSplit, raw: pl.DataFrame, params: Params
) -> HoldoutResult:
    """VERSION on the holdout; refused if it trained on holdout days. RAW is the history the
    customers' segments are read from."""
    with tempfile.TemporaryDirectory() as folder:
        model, card = logged_models.load_registered_model(f"models:/{name}/{version}", Path(folder))
    if card.train_end >= split.test_start.isoformat():
        raise ValueError(
            f"version {version} trained on days up to {card.train_end}, inside the holdout "
            f"from {split.test_start}: the comparison would favour it"
        )
    scores = steps.score_frame(model, card, split.test)
    gaps = segment_report(raw, split.test, scores >= card.threshold, params).gaps
    return HoldoutResult(steps.holdout_metrics(card, split.test, scores, params), gaps.to_dicts())


@io_task("record decision")
def record(
    client: MlflowClient,
    name: str,
    champion: ModelVersion,
    challenger: ModelVersion,
    decision: GateDecision,
    scores: dict[str, dict[str, float]],
    context: dict[str, str],
) -> str:
    """Log the decision run, tag the challenger, and move ``champion`` if it won."""
    outcome = "promoted" if decision.promote else "rejected"
    judged = str(challenger.version)
    run_name = f"promotion: v{judged} vs v{champion.version}"
    with runs.recorded_run(run_name) as run:
        run.tags(
            {
                runs.RUN_TYPE_TAG: "promotion",
                DECISION_TAG: outcome,
                "fraudops.champion_version": str(champion.version),
                "fraudops.challenger_version": judged,
            }
        )
        run.params(context)
        run.metrics(
            {
                f"{role}.{key}": value
                for role, metrics in scores.items()
                for key, value in metrics.items()
            }
        )
        run.document(
            {
                "promote": decision.promote,
                "reason": decision.reason,
                "checks": [asdict(check) for check in decision.checks],
            },
            "decision.json",
        )
    client.set_model_version_tag(name, judged, DECISION_RUN_TAG, run.run_id)
    if decision.promote:
        promote(client, name, judged, decision.reason, decision.numbers)
    else:
        record_decision(client, name, judged, "rejected", decision.reason, decision.numbers)
    get_run_logger().info("%s version %s: %s", outcome, judged, decision.reason)
    return run.run_id


@flow(name="promotion")
def promotion_flow(
    challenger_version: str | None = None,
    evidence: list[Check] | None = None,
    rev: str | None = None,
    params_path: Path | None = None,
    project: Path | None = None,
) -> PromotionOutcome:
    """Judge the challenger (or CHALLENGER_VERSION) against the champion; promote if not worse.

    EVIDENCE adds checks beyond the holdout (live A/B, shadow agreement): every check must
    pass. The holdout is the final test period of the workspace data, or of the DVC
    version at git revision REV.
    """
    settings = get_settings()
    params = load_params(params_path or settings.params_path)
    client = connect_tracking(settings)
    name = settings.model_name
    champion, challenger = find_versions(client, name, challenger_version)
    judged = str(challenger.version)
    if champion is None:
        reason = "no champion to compare with"
        promote(client, name, judged, reason)
        return PromotionOutcome("promoted", judged, judged, reason, None, {})
    if str(champion.version) == judged:
        reason = f"version {judged} is already the champion"
        get_run_logger().info(reason)
        return PromotionOutcome("unchanged", judged, judged, reason, None, {})
    source = locate_data(rev, project or Path.cwd(), settings)
    raw = load_data(source)
    validate_data(raw, params.validate_)
    split = holdout_period(features_of(raw, source, params), params)
    results = {
        "champion": score_version(name, str(champion.version), split, raw, params),
        "challenger": score_version(name, judged, split, raw, params),
    }
    scores = {role: result.metrics for role, result in results.items()}
    checks = holdout_checks(scores["champion"], scores["challenger"], params.promote.tolerance)
    fairness = fairness_check(results["champion"].gaps, results["challenger"].gaps)
    decision = decide([*checks, fairness, *(evidence or [])])
    context = {
        "champion_version": str(champion.version),
        "challenger_version": judged,
        "holdout_start": split.test_start.isoformat(),
        "holdout_end": split.test_end.isoformat(),
        "holdout_rows": str(split.test.height),
        "data_version": source.version,
        "tolerance": json.dumps(params.promote.tolerance, sort_keys=True),
    }
    run_id = record(client, name, champion, challenger, decision, scores, context)
    return PromotionOutcome(
        outcome="promoted" if decision.promote else "rejected",
        champion=judged if decision.promote else str(champion.version),
        challenger=judged,
        reason=decision.reason,
        run_id=run_id,
        numbers=decision.numbers,
    )
