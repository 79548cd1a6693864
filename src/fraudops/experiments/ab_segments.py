"""The A/B arms per customer segment: each arm's gaps, judged by the promotion gate's rule.

Each arm's labelled rows get their own segment report (`fraudops.fairness`), and the
arms' gaps are compared with `fairness_check`, the control standing for the champion:
whether the treatment widens a gap beyond its tolerance. The A/B verdict does not depend
on it; the report shows it beside the statistics.
"""

from __future__ import annotations

import math

import pandas as pd

from fraudops.config import ABParams
from fraudops.experiments.promotion_gate import fairness_check
from fraudops.experiments.report_parts import ReportModel
from fraudops.fairness.segment_report import GAP, SEGMENT
from fraudops.fairness.window_segments import SegmentSource, SegmentsUnavailable


class ArmGap(ReportModel):
    """One gap between customer segments in each arm (None where not measured)."""

    segment: str
    gap: str
    control: float | None
    treatment: float | None
    control_flagged: bool
    treatment_flagged: bool


class SegmentComparison(ReportModel):
    """The arms' segment gaps, and whether the treatment widens one beyond tolerance."""

    gaps: list[ArmGap]
    treatment_widens: bool
    detail: str


def compare_segments(
    frame: pd.DataFrame, params: ABParams, source: SegmentSource
) -> tuple[SegmentComparison | None, str | None]:
    """Each arm's segment gaps side by side, judged by the gate's `fairness_check` with
    the control as the champion; or None and why (an arm without the history it needs)."""
    gaps = []
    for name in (params.control_arm, params.treatment_arm):
        try:
            found = source.history.report(frame[frame["arm"] == name], source.params)
        except SegmentsUnavailable as error:
            return None, f"segments of arm {name!r} not reported: {error}"
        gaps.append(found.report.gaps)
    control, treatment = gaps
    check = fairness_check(control.to_dicts(), treatment.to_dicts())
    both = control.join(treatment, on=[SEGMENT, GAP], how="full", suffix="_t", coalesce=True)
    rows = [
        ArmGap(
            segment=row[SEGMENT],
            gap=row[GAP],
            control=_measured(row["value"]),
            treatment=_measured(row["value_t"]),
            control_flagged=bool(row["flagged"]),
            treatment_flagged=bool(row["flagged_t"]),
        )
        for row in both.iter_rows(named=True)
    ]
    return SegmentComparison(
        gaps=rows, treatment_widens=not check.passed, detail=check.detail
    ), None


def _measured(value: float | None) -> float | None:
    """A gap's value for the report: None when not measured (NaN)."""
    return None if value is None or math.isnan(value) else value
