"""Evaluation figures render headless, one per artifact name."""

from __future__ import annotations

import io

import numpy as np
import pytest

from fraudops.modeling.plots import evaluation_figures

pytestmark = pytest.mark.model


def test_every_evaluation_figure_renders_to_png() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.1).astype(int)
    score = np.clip(rng.random(400) * 0.5 + y * 0.4, 0, 1)

    figures = evaluation_figures(y, score, threshold=0.5)

    assert set(figures) == {
        "pr_curve.png",
        "roc_curve.png",
        "calibration.png",
        "confusion_matrix.png",
    }
    for figure in figures.values():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        assert buffer.getvalue().startswith(b"\x89PNG")
