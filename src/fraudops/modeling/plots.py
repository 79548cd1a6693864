"""Evaluation figures for a run's artifacts: PR and ROC curves, calibration, confusion.

Figures are built on `matplotlib.figure.Figure` directly, not pyplot, so no global
backend or figure registry is touched: safe in worker threads and headless servers.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from fraudops.modeling.evaluation import confusion_at

CALIBRATION_BINS = 10


def evaluation_figures(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, Figure]:
    """One figure per view of the scores, keyed by the artifact file name to save it under."""
    return {
        "pr_curve.png": _pr_curve(y, score),
        "roc_curve.png": _roc_curve(y, score),
        "calibration.png": _calibration(y, score),
        "confusion_matrix.png": _confusion(y, score, threshold),
    }


def _axes(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(5, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return figure, axes


def _pr_curve(y: np.ndarray, score: np.ndarray) -> Figure:
    precision, recall, _ = precision_recall_curve(y, score)
    figure, axes = _axes("Precision-recall", "recall", "precision")
    axes.plot(recall, precision)
    axes.axhline(np.mean(y), linestyle=":", color="grey", label="fraud rate")
    axes.legend()
    return figure


def _roc_curve(y: np.ndarray, score: np.ndarray) -> Figure:
    fpr, tpr, _ = roc_curve(y, score)
    figure, axes = _axes("ROC", "false-positive rate", "true-positive rate")
    axes.plot(fpr, tpr)
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    return figure


def _calibration(y: np.ndarray, score: np.ndarray) -> Figure:
    observed, predicted = calibration_curve(y, score, n_bins=CALIBRATION_BINS, strategy="quantile")
    figure, axes = _axes("Calibration (quantile bins)", "mean predicted", "observed fraud rate")
    axes.plot(predicted, observed, marker="o")
    top = max(predicted.max(), observed.max())
    axes.plot([0, top], [0, top], linestyle=":", color="grey")
    return figure


def _confusion(y: np.ndarray, score: np.ndarray, threshold: float) -> Figure:
    counts = confusion_at(y, score, threshold)
    cells = np.array([[counts.tn, counts.fp], [counts.fn, counts.tp]])
    figure, axes = _axes(f"Confusion at threshold {threshold:.3g}", "predicted", "actual")
    axes.imshow(cells, cmap="Blues")
    for (row, column), value in np.ndenumerate(cells):
        axes.text(column, row, f"{value:,}", ha="center", va="center")
    axes.set_xticks([0, 1], ["genuine", "fraud"])
    axes.set_yticks([0, 1], ["genuine", "fraud"])
    return figure


def importance_figure(importance: dict[str, float]) -> Figure:
    """Horizontal bars of each input's importance, largest on top."""
    ranked = sorted(importance.items(), key=lambda item: item[1])
    figure = Figure(figsize=(6, 0.3 * len(ranked) + 1.2), layout="constrained")
    axes = figure.add_subplot()
    axes.set(title="Feature importance", xlabel="importance")
    axes.barh([name for name, _ in ranked], [value for _, value in ranked])
    return figure
