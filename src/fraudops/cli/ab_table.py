"""The A/B result as `fraudops report ab` prints it: one metric a row, intervals inline.

Rendering lives with the command, not with the analysis: the JSON result is the contract
(the promotion gate reads it), and the table is only one way of looking at it.
"""

from __future__ import annotations

from rich.table import Table

from fraudops.experiments.ab_arm import METRICS, MetricName
from fraudops.experiments.ab_report import ABResult, ArmSummary, Comparison
from fraudops.experiments.report_parts import MetricEstimate, format_estimate, format_number


def ab_table(result: ABResult) -> Table:
    """The per-arm metrics and the comparison, one metric a row; then the segment gaps,
    one a row, ``*`` marking a gap flagged beyond its tolerance."""
    control, treatment = result.arms
    level = f"{1 - result.alpha:.0%}"
    table = Table(
        title=f"A/B: {treatment.arm} vs {control.arm} ({level} intervals)",
        caption=f"{result.recommendation.upper()}: {result.reason}\n{_segments_line(result)}",
    )
    for heading in ("metric", control.arm, treatment.arm, "difference", "p", "test"):
        table.add_column(heading, justify="left" if heading in ("metric", "test") else "right")
    table.add_row("labelled / frauds", *(f"{a.labelled:,} / {a.frauds:,}" for a in result.arms))
    for metric in METRICS:
        comparison = result.comparison(metric)
        table.add_row(
            _metric_label(metric, control, treatment),
            format_estimate(control.metrics[metric]),
            format_estimate(treatment.metrics[metric]),
            _shown_difference(comparison),
            format_number(comparison.p_value if comparison else None),
            comparison.test if comparison else "",
        )
    if result.required_per_arm is not None:
        table.add_row(f"needed per arm ({result.primary_metric})", str(result.required_per_arm))
    for gap in result.segments.gaps if result.segments else []:
        table.add_row(
            f"gap {gap.segment} {gap.gap}",
            _shown_gap(gap.control, gap.control_flagged),
            _shown_gap(gap.treatment, gap.treatment_flagged),
        )
    return table


def _segments_line(result: ABResult) -> str:
    if result.segments is None:
        return f"SEGMENTS: {result.segments_note or 'not reported'}"
    verdict = "treatment widens a gap" if result.segments.treatment_widens else "no gap widened"
    return f"SEGMENTS ({verdict}): {result.segments.detail}"


def _shown_gap(value: float | None, flagged: bool) -> str:
    return format_number(value) + (" *" if flagged else "")


def _metric_label(metric: MetricName, control: ArmSummary, treatment: ArmSummary) -> str:
    if metric != "card_precision_at_k":
        return metric
    return f"card precision@{control.card_k} | @{treatment.card_k}"


def _shown_difference(comparison: Comparison | None) -> str:
    if comparison is None:
        return "-"
    interval = MetricEstimate(
        value=comparison.difference, ci_low=comparison.ci_low, ci_high=comparison.ci_high
    )
    return format_estimate(interval)
