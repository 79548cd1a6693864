"""What ``fraudops demo`` tells at its end: each stage with its numbers, and every URL.

The numbers are read back from where the stages recorded them, never from the demo's own
bookkeeping: the registry (versions, test metrics, the promotion decision's tags), the
monitoring run's ``decision.json``, and the JSON the shadow and A/B reports wrote. So the
summary shows what a user would find by looking, and a stage that recorded nothing shows
as missing rather than as a number the demo assumed.

The same story is written as JSON (``demo-summary.json`` in the demo's state directory)
for scripts and tests that act on a finished demo.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from fraudops.config import Settings
from fraudops.experiments.ab_report import ABResult
from fraudops.experiments.report_parts import format_number
from fraudops.experiments.shadow_report import ShadowReport
from fraudops.health.findings import DriftDecision

SUMMARY_FILE = "demo-summary.json"
#: The line a test or a script finds the decision by: ``decision: promoted version 2 …``.
DECISION_PREFIX = "decision:"


@dataclass
class Stage:
    """One step of the story: its name, how long it took, and what it showed."""

    name: str
    seconds: float
    facts: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


@dataclass
class Story:
    """The stages in order, the URLs to look at, and whether the services are still up."""

    stages: list[Stage] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    running: bool = False
    started: float = field(default_factory=time.monotonic)
    _mark: float = field(default_factory=time.monotonic)

    def add(self, name: str, lines: list[str], **facts: Any) -> Stage:
        """Record a stage that ended now; its time is since the previous one ended."""
        now = time.monotonic()
        stage = Stage(name, round(now - self._mark, 1), facts, lines)
        self._mark = now
        self.stages.append(stage)
        return stage

    @property
    def decision(self) -> dict[str, Any]:
        return next((s.facts for s in self.stages if s.name == "decision"), {})

    def write(self, path: Path) -> None:
        document = {
            "stages": [asdict(stage) for stage in self.stages],
            "decision": self.decision,
            "urls": self.urls,
            "running": self.running,
            "seconds": round(time.monotonic() - self.started, 1),
        }
        path.write_text(json.dumps(document, indent=2, default=str) + "\n")

    def show(self, console: Console) -> None:
        console.rule("what happened")
        for stage in self.stages:
            console.print(f"[bold]{stage.name}[/] ({stage.seconds:.0f} s)")
            for line in stage.lines:
                console.print(f"  {line}", soft_wrap=True, markup=False, highlight=False)
        minutes = (time.monotonic() - self.started) / 60
        console.print(f"[bold]total[/] {minutes:.1f} min")
        console.rule("where to look" if self.running else "where to look (services stopped)")
        width = max(map(len, self.urls), default=0)
        for name, url in self.urls.items():
            console.print(f"  {name:<{width}}  {url}", soft_wrap=True, markup=False)


# --- reading the stages' own records -------------------------------------------------------


def training_facts(client: Any, settings: Settings, version: str) -> dict[str, Any]:
    """A registered version's data version and test metrics, from its MLflow run."""
    from fraudops.tracking.runs import DATA_VERSION_TAG

    model = client.get_model_version(settings.model_name, version)
    metrics = client.get_run(model.run_id).data.metrics
    return {
        "version": version,
        "data_version": model.tags.get(DATA_VERSION_TAG, ""),
        "average_precision": metrics.get("average_precision"),
        "roc_auc": metrics.get("roc_auc"),
    }


def drift_facts(reports_dir: Path) -> dict[str, Any]:
    """The newest monitoring decision that found drift (or the newest one at all)."""
    decisions = [
        DriftDecision.model_validate_json(path.read_text())
        for path in sorted(reports_dir.glob("*/decision.json"))
    ]
    if not decisions:
        return {"signal": "none recorded"}
    drifted = [d for d in decisions if d.is_drift] or decisions
    decision = max(drifted, key=lambda d: d.timestamp)
    share = decision.data_drift.drifted_share if decision.data_drift else None
    return {
        "window": decision.window_id,
        "signal": decision.signal,
        "drifted_share": share,
        "reasons": list(decision.reasons),
    }


def shadow_facts(path: Path) -> dict[str, Any]:
    report = ShadowReport.model_validate_json(path.read_text())
    return {
        "shadow_model": report.shadow_model,
        "pairs": report.pairs,
        "agreement": report.agreement,
        "labelled": report.labelled,
        "labelled_frauds": report.labelled_frauds,
        "frauds_only_shadow_caught": report.clear_to_alert.fraud,
        "frauds_only_served_caught": report.alert_to_clear.fraud,
        "fraud_flip_p_value": report.fraud_flip_p_value,
        "enough_data": report.enough_data,
        "reason": report.reason,
    }


def ab_facts(path: Path) -> dict[str, Any]:
    result = ABResult.model_validate_json(path.read_text())
    primary = result.comparison(result.primary_metric)
    return {
        "recommendation": result.recommendation,
        "reason": result.reason,
        "primary_metric": result.primary_metric,
        "min_detectable_lift": result.min_detectable_lift,
        "labelled": {arm.arm: arm.labelled for arm in result.arms},
        "frauds": {arm.arm: arm.frauds for arm in result.arms},
        "required_per_arm": result.required_per_arm,
        "planned": bool(result.comparisons),  # past the floors: the plan's size is known
        "control": primary.control if primary else None,
        "treatment": primary.treatment if primary else None,
        "p_value": primary.p_value if primary else None,
    }


def decision_facts(client: Any, settings: Settings, version: str) -> dict[str, Any]:
    """The gate's decision as the registry holds it: the version's tags and the aliases."""
    from fraudops.tracking.registry import (
        CHAMPION,
        DECISION_NUMBER_PREFIX,
        DECISION_REASON_TAG,
        DECISION_TAG,
        version_by_alias,
    )
    from pipelines.promotion import DECISION_RUN_TAG

    tags = client.get_model_version(settings.model_name, version).tags
    champion = version_by_alias(client, settings.model_name, CHAMPION)
    return {
        "version": version,
        "outcome": tags.get(DECISION_TAG, "none recorded"),
        "reason": tags.get(DECISION_REASON_TAG, ""),
        "champion": str(champion.version) if champion else None,
        "decision_run": tags.get(DECISION_RUN_TAG),
        "numbers": {
            key.removeprefix(DECISION_NUMBER_PREFIX): value
            for key, value in tags.items()
            if key.startswith(DECISION_NUMBER_PREFIX)
        },
    }


# --- the lines shown -----------------------------------------------------------------------


def number(value: float | None) -> str:
    return format_number(value)


def share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def shadow_lines(facts: dict[str, Any]) -> list[str]:
    verdict = "enough labels for a verdict" if facts["enough_data"] else "no verdict yet"
    return [
        f"{facts['shadow_model']}: {facts['pairs']:,} shadowed requests, decision agreement "
        f"{share(facts['agreement'])}",
        f"{facts['labelled']:,} labelled ({facts['labelled_frauds']} frauds): the shadow alone "
        f"caught {facts['frauds_only_shadow_caught']}, the served model alone "
        f"{facts['frauds_only_served_caught']} (McNemar p={number(facts['fraud_flip_p_value'])})"
        f"; {verdict}",
    ]


def ab_lines(facts: dict[str, Any]) -> list[str]:
    labelled = ", ".join(
        f"{arm} {count:,} ({facts['frauds'][arm]} frauds)"
        for arm, count in facts["labelled"].items()
    )
    metric = facts["primary_metric"]
    return [
        f"labelled per arm: {labelled}; needed per arm to see a "
        f"{facts['min_detectable_lift']:.0%} lift of {metric}: "
        f"{facts['required_per_arm'] or '-'}",
        f"{metric}: champion {number(facts['control'])}, challenger "
        f"{number(facts['treatment'])} (p={number(facts['p_value'])})",
        f"verdict {facts['recommendation'].upper()}: {facts['reason']}",
    ]


def decision_lines(facts: dict[str, Any]) -> list[str]:
    return [
        f"{DECISION_PREFIX} {facts['outcome']} version {facts['version']}; champion is "
        f"version {facts['champion']}",
        f"reason: {facts['reason']}",
        f"evidence on the MLflow version: tags fraudops.decision*, "
        f"{len(facts['numbers'])} numbers, decision run {facts['decision_run']}",
    ]
