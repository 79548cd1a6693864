"""Shadow analysis: the served model and its shadow, compared on the same transactions.

A shadow scores requests the served model answered, so every comparison is paired: the
two models saw identical inputs, and any difference is the models' own. That makes the
shadow the cheap first step before an A/B test: agreement, score correlation and latency
need no labels at all; once labels arrive, the decisions on which the two disagree (the
flips) show which model was right, with an exact McNemar test on the frauds among them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field
from rich.table import Table
from scipy.stats import binomtest, pearsonr, spearmanr
from sqlalchemy import Engine
from statsmodels.stats.proportion import proportion_confint

from fraudops.config import ABParams, TrainParams
from fraudops.experiments.promotion_gate import Check
from fraudops.experiments.report_parts import (
    MetricEstimate,
    ReportModel,
    ReportWindow,
    format_estimate,
    format_number,
)
from fraudops.modeling.evaluation import confusion_at, expected_cost

Side = Literal["served", "shadow"]
_SIDES: tuple[Side, Side] = ("served", "shadow")
_PAIR_COLUMNS = ["score", "decision", "latency_ms", "model_name", "model_version", "model_alias"]


class FlipCounts(ReportModel):
    """Decisions the shadow would have changed in one direction, split by the known label."""

    total: int = 0
    fraud: int = 0
    genuine: int = 0
    unlabelled: int = 0


class SideSummary(ReportModel):
    """One model's latency over all pairs, and its quality on the labelled pairs."""

    alert_rate: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    precision: float | None = None
    recall: float | None = None
    expected_cost: float | None = Field(None, description="Per transaction, train cost model.")


class ShadowReport(ReportModel):
    """Everything the shadow report shows; JSON in, JSON out, for the promotion gate."""

    window: ReportWindow | None = None
    served_models: dict[str, int] = Field(description="Model -> pairs it answered.")
    shadow_model: str | None
    served: int = Field(description="Served rows in the window, shadowed or not.")
    pairs: int
    agreement: float | None
    agreement_ci_low: float | None
    agreement_ci_high: float | None
    pearson: float | None
    spearman: float | None
    alert_to_clear: FlipCounts = Field(description="Served alerted, the shadow would not.")
    clear_to_alert: FlipCounts = Field(description="Served cleared, the shadow would alert.")
    sides: dict[Side, SideSummary]
    labelled: int
    labelled_frauds: int
    served_right: int = Field(description="Labelled flips the served model got right.")
    shadow_right: int = Field(description="Labelled flips the shadow got right.")
    fraud_flip_p_value: float | None = Field(
        description="Exact McNemar: frauds only the served model caught vs only the shadow."
    )
    cost_saving_per_1000: float | None = Field(
        description="Served cost minus shadow cost per 1,000 labelled transactions."
    )
    alpha: float
    enough_data: bool
    reason: str


def read_shadow_window(engine: Engine, window: ReportWindow) -> pd.DataFrame:
    """Served rows of the window and the shadow rows of the same requests.

    With ``last_n`` the window counts served rows only; their shadows are logged a little
    later (off the response path), so they are read from the first served row onwards.
    """
    if window.last_n is None:
        return window.read(engine, "all")
    served = window.read(engine, "served")
    if served.empty:
        return served
    start = served[window.time_column].min()
    shadows = window.model_copy(update={"start": start, "end": None, "last_n": None})
    shadow = shadows.read(engine, "shadow")
    return pd.concat([served, shadow[shadow["request_id"].isin(served["request_id"])]])


def analyse_shadow(
    frame: pd.DataFrame,
    params: ABParams,
    costs: TrainParams,
    *,
    shadow_version: str | None = None,
    window: ReportWindow | None = None,
) -> ShadowReport:
    """Compare served rows with the shadow rows of the same requests (``rows="all"``).

    One shadow model is judged at a time: SHADOW_VERSION, or the version of the newest
    shadow row, since a window may span a change of challenger.
    """
    served = frame[~frame["is_shadow"].astype(bool)]
    shadow = frame[frame["is_shadow"].astype(bool)]
    if shadow_version is None and not shadow.empty:
        shadow_version = str(shadow["model_version"].iloc[-1])
    shadow = shadow[shadow["model_version"].astype(str) == shadow_version]
    pairs = served.merge(
        shadow[["request_id", *_PAIR_COLUMNS]], on="request_id", suffixes=("", "_shadow")
    )
    served_alert = pairs["decision"].to_numpy(dtype=bool)
    shadow_alert = pairs["decision_shadow"].to_numpy(dtype=bool)
    label = pairs["label"]
    labelled = label.notna().to_numpy()
    y = label[labelled].to_numpy(dtype=np.int8)
    low, high = _agreement_interval(served_alert == shadow_alert, params.alpha)
    alert_to_clear = _flips(served_alert & ~shadow_alert, label)
    clear_to_alert = _flips(~served_alert & shadow_alert, label)
    enough, reason = _sufficiency(len(pairs), int(labelled.sum()), int(y.sum()), params)
    sides = {
        side: _side(pairs[f"latency_ms{suffix}"].to_numpy(float), alert, labelled, y, costs)
        for side, alert, suffix in zip(
            _SIDES, (served_alert, shadow_alert), ("", "_shadow"), strict=True
        )
    }
    served_cost, shadow_cost = (sides[side].expected_cost for side in _SIDES)
    return ShadowReport(
        window=window,
        served_models=_models(pairs, ""),
        shadow_model=next(iter(_models(pairs, "_shadow")), None),
        served=len(served),
        pairs=len(pairs),
        agreement=float(np.mean(served_alert == shadow_alert)) if len(pairs) else None,
        agreement_ci_low=low,
        agreement_ci_high=high,
        pearson=_correlation(pearsonr, pairs),
        spearman=_correlation(spearmanr, pairs),
        alert_to_clear=alert_to_clear,
        clear_to_alert=clear_to_alert,
        sides=sides,
        labelled=int(labelled.sum()),
        labelled_frauds=int(y.sum()),
        served_right=alert_to_clear.fraud + clear_to_alert.genuine,
        shadow_right=alert_to_clear.genuine + clear_to_alert.fraud,
        fraud_flip_p_value=_mcnemar(alert_to_clear.fraud, clear_to_alert.fraud),
        cost_saving_per_1000=(
            None
            if served_cost is None or shadow_cost is None
            else 1000 * (served_cost - shadow_cost)
        ),
        alpha=params.alpha,
        enough_data=enough,
        reason=reason,
    )


def _models(pairs: pd.DataFrame, suffix: str) -> dict[str, int]:
    names = (
        pairs[f"model_name{suffix}"]
        + " v"
        + pairs[f"model_version{suffix}"].astype(str)
        + " ("
        + pairs[f"model_alias{suffix}"]
        + ")"
    )
    return {str(name): int(count) for name, count in names.value_counts().items()}


def _agreement_interval(agree: np.ndarray, alpha: float) -> tuple[float | None, float | None]:
    """Wilson interval: it stays inside [0, 1] and is honest near 100% agreement."""
    if len(agree) == 0:
        return None, None
    low, high = proportion_confint(int(agree.sum()), len(agree), alpha=alpha, method="wilson")
    return float(low), float(high)


def _correlation(method: Callable[..., Any], pairs: pd.DataFrame) -> float | None:
    """None when undefined: fewer than two pairs, or a model whose scores never vary."""
    served, shadow = pairs["score"].to_numpy(float), pairs["score_shadow"].to_numpy(float)
    if len(pairs) < 2 or np.ptp(served) == 0 or np.ptp(shadow) == 0:
        return None
    return float(method(served, shadow).statistic)


def _flips(flipped: np.ndarray, label: pd.Series) -> FlipCounts:
    known = label[flipped]
    return FlipCounts(
        total=int(flipped.sum()),
        fraud=int((known == 1).sum()),
        genuine=int((known == 0).sum()),
        unlabelled=int(known.isna().sum()),
    )


def _side(
    latency: np.ndarray, alert: np.ndarray, labelled: np.ndarray, y: np.ndarray, costs: TrainParams
) -> SideSummary:
    """Quality from the logged decisions: a decision is a 0/1 score alerting at 0.5."""
    if len(latency) == 0:
        return SideSummary()
    summary: dict[str, float] = {
        "alert_rate": float(alert.mean()),
        "latency_p50_ms": float(np.percentile(latency, 50)),
        "latency_p95_ms": float(np.percentile(latency, 95)),
    }
    if len(y):
        decision = alert[labelled].astype(float)
        counts = confusion_at(y, decision, 0.5)
        summary |= {
            "precision": counts.precision,
            "recall": counts.recall,
            "expected_cost": expected_cost(
                y,
                decision,
                0.5,
                cost_missed_fraud=costs.cost_missed_fraud,
                cost_false_alarm=costs.cost_false_alarm,
            ),
        }
    return SideSummary(**summary)


def _mcnemar(only_served_caught: int, only_shadow_caught: int) -> float | None:
    """Exact McNemar test: under no difference each discordant fraud is a fair coin."""
    discordant = only_served_caught + only_shadow_caught
    if discordant == 0:
        return None
    return float(binomtest(only_shadow_caught, discordant, 0.5).pvalue)


def _sufficiency(pairs: int, labelled: int, frauds: int, params: ABParams) -> tuple[bool, str]:
    if labelled < params.min_sample or frauds < params.min_frauds:
        return False, (
            f"{pairs} shadowed requests, {labelled} labelled with {frauds} frauds; a verdict "
            f"needs {params.min_sample} labelled and {params.min_frauds} frauds"
        )
    return True, f"{pairs} shadowed requests, {labelled} labelled with {frauds} frauds"


# --- the promotion gate's view -------------------------------------------------------------


def shadow_check(report: ShadowReport) -> Check | None:
    """The shadow as promotion-gate evidence; None while the labels are too few.

    It fails only when the shadow lets through significantly more of the frauds the two
    models disagree on than it catches: a missed fraud is the costly error, and a fresh
    model is allowed to differ (its threshold is its own) as long as it is not worse there.
    """
    if not report.enough_data:
        return None
    missed, caught = report.alert_to_clear.fraud, report.clear_to_alert.fraud
    p_value = report.fraud_flip_p_value
    worse = p_value is not None and p_value < report.alpha and missed > caught
    numbers = {
        "shadow.agreement": report.agreement,
        "shadow.frauds_only_served_caught": float(missed),
        "shadow.frauds_only_shadow_caught": float(caught),
        "shadow.fraud_flip_p_value": p_value,
        "shadow.cost_saving_per_1000": report.cost_saving_per_1000,
    }
    return Check(
        name="shadow fraud flips",
        passed=not worse,
        detail=(
            f"shadow caught {caught} frauds the served model missed and missed {missed} it "
            f"caught (p={format_number(p_value)})"
        ),
        numbers={key: value for key, value in numbers.items() if value is not None},
    )


# --- display -------------------------------------------------------------------------------


def shadow_table(report: ShadowReport) -> Table:
    served = ", ".join(report.served_models) or "-"
    table = Table(
        title=f"Shadow: {report.shadow_model or '-'} vs {served}",
        caption=report.reason,
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    flips = {"served alert -> shadow clear": report.alert_to_clear}
    flips["served clear -> shadow alert"] = report.clear_to_alert
    rows = [
        ("shadowed / served requests", f"{report.pairs:,} / {report.served:,}"),
        (
            "decision agreement",
            format_estimate(
                MetricEstimate(
                    value=report.agreement,
                    ci_low=report.agreement_ci_low,
                    ci_high=report.agreement_ci_high,
                )
            ),
        ),
        (
            "score correlation (Pearson / Spearman)",
            f"{format_number(report.pearson)} / {format_number(report.spearman)}",
        ),
        *(
            (name, f"{f.total:,} (fraud {f.fraud}, genuine {f.genuine}, unlabelled {f.unlabelled})")
            for name, f in flips.items()
        ),
        ("flips right: served / shadow", f"{report.served_right} / {report.shadow_right}"),
        ("fraud flips McNemar p", format_number(report.fraud_flip_p_value)),
        ("cost saving per 1,000 (shadow)", format_number(report.cost_saving_per_1000)),
    ]
    for side, summary in report.sides.items():
        rows += [
            (
                f"{side} latency p50 / p95 ms",
                f"{format_number(summary.latency_p50_ms)} / "
                f"{format_number(summary.latency_p95_ms)}",
            ),
            (f"{side} alert rate", format_number(summary.alert_rate)),
            (
                f"{side} precision / recall (labelled)",
                f"{format_number(summary.precision)} / {format_number(summary.recall)}",
            ),
        ]
    for row in rows:
        table.add_row(*row)
    return table
