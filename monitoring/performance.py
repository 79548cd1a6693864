"""Quality before the labels arrive: NannyML's confidence-based performance estimation.

Fraud labels come a week late. CBPE estimates precision, recall and ROC AUC of a window
from its scores alone: fitted on reference rows with labels, it takes each calibrated
score as the probability that the row is a fraud and computes the expected confusion
matrix. Calibration: NannyML checks on the reference whether isotonic regression lowers
the calibration error of the scores and, if so, fits it (the models here weight frauds up
in training, so their raw scores overstate fraud); the same calibrated probabilities give
the expected fraud count and the estimated average precision, which NannyML lacks.

The estimator is fitted on the reference's test period, whose scores are out-of-sample:
in-sample training scores are overconfident and would calibrate wrongly.

What CBPE cannot see: it assumes P(fraud | score) is unchanged, so a new fraud pattern
that the model scores as genuine leaves the estimate where it was. Only the labels show
that (``fraudops.health.decision.compare_estimate``).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd

from fraudops.health.decision import LABEL, expected_average_precision
from fraudops.health.findings import PerformanceEstimate
from fraudops.modeling.steps import SCORE

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # NannyML reports usage by default

#: Metrics CBPE estimates, named as ``fraudops.modeling.evaluation.evaluate`` names them.
CBPE_METRICS = ("roc_auc", "precision", "recall")
_ALERT = "alert"


class EstimationError(RuntimeError):
    """NannyML could not fit or estimate; the message carries its own error."""


def estimate_performance(
    reference: pd.DataFrame, current: pd.DataFrame, *, threshold: float
) -> PerformanceEstimate:
    """CBPE fitted on REFERENCE (labelled, out-of-sample scores), estimated on CURRENT."""
    import nannyml

    estimator = nannyml.CBPE(
        problem_type="classification_binary",
        y_pred_proba=SCORE,
        y_pred=_ALERT,
        y_true=LABEL,
        metrics=list(CBPE_METRICS),
        chunk_number=1,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # single-chunk thresholds are undefined; unused
            estimator.fit(_with_alerts(reference[[SCORE, LABEL]], threshold))
            result = estimator.estimate(_with_alerts(current[[SCORE]], threshold))
    except Exception as error:
        raise EstimationError(f"{type(error).__name__}: {error}") from error
    row = result.filter(period="analysis").to_df().iloc[0]
    scores = current[SCORE].to_numpy(dtype=np.float64)
    probabilities = (
        estimator.calibrator.calibrate(scores) if estimator.needs_calibration else scores
    )
    return PerformanceEstimate(
        values=_finite(
            {
                **{metric: float(row[(metric, "value")]) for metric in CBPE_METRICS},
                "average_precision": expected_average_precision(scores, probabilities),
            }
        ),
        sampling_error=_finite(
            {metric: float(row[(metric, "sampling_error")]) for metric in CBPE_METRICS}
        ),
        expected_frauds=float(np.sum(probabilities)),
        rows=len(current),
        calibrated=bool(estimator.needs_calibration),
    )


def _with_alerts(frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The model's decision beside its score: CBPE estimates precision/recall of alerts."""
    return frame.reset_index(drop=True).assign(
        **{_ALERT: (frame[SCORE].to_numpy() >= threshold).astype(int)}
    )


def _finite(values: dict[str, float]) -> dict[str, float]:
    """Drop what the reference could not define (JSON has no NaN; absent means unknown)."""
    return {name: value for name, value in values.items() if np.isfinite(value)}
