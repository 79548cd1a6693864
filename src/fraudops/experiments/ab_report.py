"""Live A/B analysis: per-arm fraud metrics with intervals, tests, a sample size, a verdict.

The statistics are in ``ab_statistics`` (and ``ab_arm`` for one arm's metrics); this
module applies them to the two arms of the prediction log and decides:

* every confidence interval is a cluster bootstrap: customers are drawn with replacement
  within each arm, each bringing all of its labelled transactions;
* precision, recall and fraud caught per 1,000 transactions are tested with the
  delta-method z-test over customers;
* average precision and card precision@k have no usable closed form: their test is the
  bootstrap distribution of the difference (reject when its interval excludes zero);
* the sample size is the closed form for two proportions, scaled by the design effect
  that the customer clustering adds.

The verdict is a fixed-horizon decision: a lift can promote only once the arms hold the
sample the configured power needs, so looking at the report every day does not inflate
the false-promotion rate. Harm stops the test at any look, since it can only keep the
champion: the treatment significantly worse on any metric, at alpha divided by the number
of metrics (Bonferroni), so that an equal challenger is not stopped by whichever of the
five tests trips by chance.

Given the customers' raw history, each arm also gets its report per customer segment
(`fraudops.experiments.ab_segments`). It informs; the verdict above stays the statistics'
alone, and the gate weighs fairness on its holdout.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import Field

from fraudops.config import ABParams, ProportionMetric
from fraudops.experiments.ab_arm import METRICS, PROPORTION_METRICS, ArmSample, MetricName
from fraudops.experiments.ab_segments import SegmentComparison, compare_segments
from fraudops.experiments.ab_statistics import (
    bootstrap_p_value,
    design_effect,
    percentile_interval,
    ratio_z_test,
    required_sample_size,
)
from fraudops.experiments.promotion_gate import Check
from fraudops.experiments.report_parts import (
    MetricEstimate,
    ReportModel,
    ReportWindow,
    format_number,
)
from fraudops.fairness.window_segments import SegmentSource

Recommendation = Literal["promote", "keep", "need_more_data"]

_TESTS: dict[MetricName, str] = {
    **dict.fromkeys(PROPORTION_METRICS, "delta-method z-test over customers"),
    "average_precision": "customer bootstrap of the difference",
    "card_precision_at_k": "customer bootstrap of the difference",
}


class ArmSummary(ReportModel):
    arm: str
    model_versions: list[str]
    served: int
    labelled: int
    frauds: int
    alerts: int
    customers: int
    card_k: int = Field(description="k of this arm's card precision: top_k x traffic share.")
    metrics: dict[MetricName, MetricEstimate]


class Comparison(ReportModel):
    """Treatment minus control on one metric, its interval, test and planned sample size."""

    metric: MetricName
    control: float | None
    treatment: float | None
    difference: float | None
    relative_lift: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str
    significant: bool
    required_per_arm: int | None = Field(
        None, description="Labelled transactions per arm to detect the configured lift."
    )

    @property
    def better(self) -> bool:
        return self.significant and (self.difference or 0.0) > 0


class ABResult(ReportModel):
    """Everything the A/B report shows; JSON in, JSON out, for the promotion gate."""

    control_arm: str
    treatment_arm: str
    primary_metric: ProportionMetric
    alpha: float
    power: float
    min_detectable_lift: float
    bootstrap_resamples: int
    seed: int
    window: ReportWindow | None = None
    arms: list[ArmSummary]
    comparisons: list[Comparison]
    design_effect: float | None
    required_per_arm: int | None
    recommendation: Recommendation
    reason: str
    segments: SegmentComparison | None = None
    segments_note: str | None = Field(None, description="Why there is no segment comparison.")

    def comparison(self, metric: MetricName) -> Comparison | None:
        return next((c for c in self.comparisons if c.metric == metric), None)


def analyse_ab(
    frame: pd.DataFrame,
    params: ABParams,
    *,
    top_k: int,
    window: ReportWindow | None = None,
    segments: SegmentSource | None = None,
) -> ABResult:
    """The A/B result of served prediction-log rows (``ReportWindow.read(engine, "served")``).

    Only labelled rows are evidence. Card precision's k is ``top_k`` scaled by the arm's
    share of served traffic: an investigation team checking ``top_k`` cards a day over all
    traffic checks that share of them in each arm, so arms of unequal weight compare fairly.
    With SEGMENTS, the arms' segment gaps are compared too (`compare_segments`).
    """
    names = (params.control_arm, params.treatment_arm)
    total_served = len(frame)
    arm_frames = [frame[frame["arm"] == name] for name in names]
    samples = [
        ArmSample.from_frame(rows, _scaled_k(top_k, len(rows), total_served)) for rows in arm_frames
    ]
    shortfall = _shortfall(names, samples, params)
    draws: list[dict[MetricName, NDArray[np.float64]]] = [{}, {}]
    comparisons: list[Comparison] = []
    design = required = None
    if shortfall is None:
        seeds = np.random.SeedSequence(params.seed).spawn(2)
        draws = [
            sample.draws(np.random.default_rng(seed), params.bootstrap_resamples)
            for sample, seed in zip(samples, seeds, strict=True)
        ]
        comparisons = [
            _compare(metric, samples[0], samples[1], draws[0], draws[1], params)
            for metric in METRICS
        ]
        design = design_effect(samples[0].ratio_sums(params.primary_metric))
        required = next(
            c for c in comparisons if c.metric == params.primary_metric
        ).required_per_arm
    arms = [
        _summarise(name, rows, sample, arm_draws, params.alpha)
        for name, rows, sample, arm_draws in zip(names, arm_frames, samples, draws, strict=True)
    ]
    recommendation, reason = _recommend(shortfall, arms, comparisons, required, params)
    segment_comparison, segments_note = None, None
    if segments is not None:
        segment_comparison, segments_note = compare_segments(frame, params, segments)
    return ABResult(
        control_arm=params.control_arm,
        treatment_arm=params.treatment_arm,
        primary_metric=params.primary_metric,
        alpha=params.alpha,
        power=params.power,
        min_detectable_lift=params.min_detectable_lift,
        bootstrap_resamples=params.bootstrap_resamples,
        seed=params.seed,
        window=window,
        arms=arms,
        comparisons=comparisons,
        design_effect=design,
        required_per_arm=required,
        recommendation=recommendation,
        reason=reason,
        segments=segment_comparison,
        segments_note=segments_note,
    )


def _scaled_k(top_k: int, arm_rows: int, total_rows: int) -> int:
    return max(1, round(top_k * arm_rows / total_rows)) if total_rows else top_k


def _compare(
    metric: MetricName,
    control: ArmSample,
    treatment: ArmSample,
    control_draws: dict[MetricName, NDArray[np.float64]],
    treatment_draws: dict[MetricName, NDArray[np.float64]],
    params: ABParams,
) -> Comparison:
    before, after = control.estimate(metric), treatment.estimate(metric)
    differences = treatment_draws[metric] - control_draws[metric]
    ci_low, ci_high = percentile_interval(differences, params.alpha)
    required = None
    if metric in PROPORTION_METRICS:
        _, p = ratio_z_test(control.ratio_sums(metric), treatment.ratio_sums(metric))
        p_value = float(p)
        required = _required_transactions(metric, control, params)
    else:
        p_value = bootstrap_p_value(differences)
    difference = relative_lift = None
    if before is not None and after is not None:
        difference = after - before
        relative_lift = difference / before if before else None
    return Comparison(
        metric=metric,
        control=before,
        treatment=after,
        difference=difference,
        relative_lift=relative_lift,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=None if math.isnan(p_value) else p_value,
        test=_TESTS[metric],
        significant=not math.isnan(p_value) and p_value < params.alpha,
        required_per_arm=required,
    )


def _required_transactions(
    metric: ProportionMetric, control: ArmSample, params: ABParams
) -> int | None:
    """The closed-form sample in the metric's own units (alerts, frauds, transactions)
    times the design effect of the clustering, as labelled transactions through the
    control's rate of those units."""
    sums = control.ratio_sums(metric)
    units = required_sample_size(
        float(sums.ratio), params.min_detectable_lift, alpha=params.alpha, power=params.power
    )
    if units is None:
        return None
    units_per_transaction = float(sums.x) / control.transactions
    return math.ceil(units * (design_effect(sums) or 1.0) / units_per_transaction)


def _summarise(
    name: str,
    rows: pd.DataFrame,
    sample: ArmSample,
    draws: dict[MetricName, NDArray[np.float64]],
    alpha: float,
) -> ArmSummary:
    return ArmSummary(
        arm=name,
        model_versions=sorted(rows["model_version"].astype(str).unique()),
        served=len(rows),
        labelled=sample.transactions,
        frauds=sample.frauds,
        alerts=sample.alerts,
        customers=sample.customers,
        card_k=sample.card_k,
        metrics={
            metric: _estimate(sample.estimate(metric), draws.get(metric), alpha)
            for metric in METRICS
        },
    )


def _estimate(
    value: float | None, draws: NDArray[np.float64] | None, alpha: float
) -> MetricEstimate:
    low, high = percentile_interval(draws, alpha)
    return MetricEstimate(value=value, ci_low=low, ci_high=high)


# --- the verdict ---------------------------------------------------------------------------


def _shortfall(names: tuple[str, str], samples: list[ArmSample], params: ABParams) -> str | None:
    """Why the arms are too small for any verdict, or None when they are not."""
    for name, sample in zip(names, samples, strict=True):
        frauds = int(sample.label.sum())
        if sample.transactions < params.min_sample or frauds < params.min_frauds:
            return (
                f"arm {name!r} has {sample.transactions} labelled transactions and {frauds} "
                f"frauds; a verdict needs {params.min_sample} and {params.min_frauds}"
            )
    return None


def _recommend(
    shortfall: str | None,
    arms: list[ArmSummary],
    comparisons: list[Comparison],
    required: int | None,
    params: ABParams,
) -> tuple[Recommendation, str]:
    if shortfall is not None:
        return "need_more_data", shortfall
    treatment = params.treatment_arm
    harm_alpha = params.alpha / len(comparisons)  # Bonferroni: one guard in five trips by chance
    worse = [
        f"{c.metric} (p={c.p_value:.3g})"
        for c in comparisons
        if c.p_value is not None and c.p_value < harm_alpha and (c.difference or 0.0) < 0
    ]
    if worse:
        return "keep", (
            f"{treatment!r} is significantly worse (p < {harm_alpha:.3g}) on {', '.join(worse)}"
        )
    primary = next(c for c in comparisons if c.metric == params.primary_metric)
    have = min(arm.labelled for arm in arms)
    if required is None:
        return "need_more_data", (
            f"no sample size can show a {params.min_detectable_lift:.0%} lift of "
            f"{primary.metric} from {format_number(primary.control)}"
        )
    if have < required:
        return "need_more_data", (
            f"{have} labelled transactions in the smaller arm; detecting a "
            f"{params.min_detectable_lift:.0%} lift of {primary.metric} at power "
            f"{params.power:.0%} needs {required} per arm"
        )
    if primary.better:
        return "promote", (
            f"{treatment!r} raises {primary.metric} from {primary.control:.4g} to "
            f"{primary.treatment:.4g} (p={primary.p_value:.3g}) and is worse on nothing"
        )
    return "keep", (
        f"no significant gain in {primary.metric} (p={format_number(primary.p_value)}) with the "
        f"{required} transactions per arm that a {params.min_detectable_lift:.0%} lift needs"
    )


def ab_check(result: ABResult) -> Check | None:
    """The A/B result as promotion-gate evidence; None while it gives no verdict."""
    if result.recommendation == "need_more_data":
        return None
    numbers = {
        f"ab.{c.metric}.{part}": value
        for c in result.comparisons
        for part, value in (("difference", c.difference), ("p_value", c.p_value))
        if value is not None
    }
    return Check(
        name=f"live A/B {result.primary_metric}",
        passed=result.recommendation == "promote",
        detail=f"A/B: {result.reason}",
        numbers=numbers,
    )


def live_evidence_allows_promotion(result: ABResult) -> bool | None:
    """True on ``promote``, False on ``keep``, None while the test needs more data."""
    check = ab_check(result)
    return None if check is None else check.passed
