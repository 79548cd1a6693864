"""The fairness figure: recall and false-positive rate per segment value, with intervals.

One panel per segment column, so a gap and the noise around it show side by side.
Built on `matplotlib.figure.Figure`, not pyplot, like `fraudops.modeling.plots`.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fraudops.fairness.segment_report import GROUP, SEGMENT

#: The metrics drawn, each on its own axis scale: recall on the left, FPR on the right.
PLOTTED = (("recall", "tab:blue"), ("false_positive_rate", "tab:red"))


def segment_figure(table: pl.DataFrame) -> Figure:
    """Recall and FPR of each segment value of TABLE (`SegmentReport.table`), with intervals."""
    segments = table[SEGMENT].unique(maintain_order=True).to_list()
    figure = Figure(figsize=(4 * len(segments), 4), layout="constrained")
    for index, segment in enumerate(segments):
        axes = figure.add_subplot(1, len(segments), index + 1)
        _panel(axes, table.filter(pl.col(SEGMENT) == segment), segment)
    return figure


def _panel(recall_axes: Axes, rows: pl.DataFrame, segment: str) -> None:
    fpr_axes = recall_axes.twinx()
    positions = np.arange(rows.height)
    for (metric, colour), axes, shift in zip(
        PLOTTED, (recall_axes, fpr_axes), (-0.1, 0.1), strict=True
    ):
        value = rows[metric].fill_null(np.nan).to_numpy().astype(float)
        low = rows[f"{metric}_low"].fill_null(np.nan).to_numpy().astype(float)
        high = rows[f"{metric}_high"].fill_null(np.nan).to_numpy().astype(float)
        errors = np.vstack([np.clip(value - low, 0, None), np.clip(high - value, 0, None)])
        axes.errorbar(positions + shift, value, yerr=errors, fmt="o", color=colour, capsize=3)
        axes.set_ylabel(metric, color=colour)
    labels = [f"{group}\n(n={n})" for group, n in rows.select(GROUP, "n_transactions").iter_rows()]
    recall_axes.set_xticks(positions, labels, fontsize=8)
    recall_axes.set_title(segment)
