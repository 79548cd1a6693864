"""Parameters: what the pipeline computes with, one typed section per stage.

Read from ``params.yaml``, the file DVC tracks, so a changed value re-runs exactly the
stages that read it. An unknown key is an error, never a silent default.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fraudops.config.settings import get_settings

Scenario = Literal["none", "amount_shift", "new_fraud_pattern", "regional_fraud"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulateParams(_Section):
    customers: int = Field(5000, gt=0)
    terminals: int = Field(10000, gt=0)
    days: int = Field(183, gt=0)
    start: dt.date = dt.date(2018, 4, 1)
    seed: int = 42
    scenario: Scenario = "none"


class FeatureParams(_Section):
    customer_windows_days: tuple[int, ...] = (1, 7, 30)
    terminal_windows_days: tuple[int, ...] = (1, 7, 30)
    label_delay_days: int = Field(
        7,
        ge=1,
        description="A label is usable this many days after its transaction, to the hour "
        "(fraudops.features.label_timing): the one label delay of features, serving, split "
        "and replay.",
    )
    night_last_hour: int = Field(6, ge=0, le=23)
    amount_ratio_windows_days: tuple[int, ...] = Field(
        (),
        description="Customer windows (each one of customer_windows_days) whose amount ratio "
        "is a feature: the amount over the customer's average in the window. None by default: "
        "docs/model-quality.md measures what they buy.",
    )

    @model_validator(mode="after")
    def _ratios_of_customer_windows(self) -> FeatureParams:
        """A ratio reads its window's sums, so only a customer window can have one."""
        unknown = sorted(set(self.amount_ratio_windows_days) - set(self.customer_windows_days))
        if unknown:
            raise ValueError(
                f"amount_ratio_windows_days {unknown} are not customer_windows_days "
                f"{list(self.customer_windows_days)}"
            )
        return self


class ValidateParams(_Section):
    max_fraud_rate: float = Field(0.5, gt=0, le=1)


ModelFamily = Literal["logistic_regression", "random_forest", "xgboost"]
HyperValue = int | float | str | None


class CandidateGrid(_Section):
    """One model family's search space: fixed settings plus a grid to cross.

    ``positive_weight`` (a number, or ``"balanced"`` for n_negative / n_positive of the
    training data) is the class-imbalance knob, mapped to each family's native setting.
    """

    fixed: dict[str, HyperValue] = {}
    grid: dict[str, list[HyperValue]] = {}


def _default_candidates() -> dict[ModelFamily, CandidateGrid]:
    return {
        "logistic_regression": CandidateGrid(
            fixed={"max_iter": 1000, "C": 0.1}, grid={"positive_weight": [1, 10]}
        ),
        "random_forest": CandidateGrid(
            fixed={"n_estimators": 100, "max_depth": 20, "max_features": "sqrt"},
            grid={"positive_weight": [1]},
        ),
        "xgboost": CandidateGrid(
            fixed={
                "n_estimators": 300,
                "learning_rate": 0.05,
                "max_bin": 4096,
                "subsample": 0.8,
                "colsample_bytree": 0.8,
                "positive_weight": 1,
            },
            grid={"max_depth": [3, 4]},
        ),
    }


class TrainParams(_Section):
    """Splitting, candidate models and the cost model (see docs/model-quality.md)."""

    train_days: int = Field(7, gt=0)
    delay_days: int = Field(
        7,
        ge=1,
        description="Days between train and test, and the split's label delay; in params.yaml "
        "it must equal features.label_delay_days (checked by Params).",
    )
    test_days: int = Field(7, gt=0)
    validation_folds: int = Field(4, gt=0)
    test_start: dt.date | None = Field(
        None, description="First test day; None means the last `test_days` days of the data."
    )
    seed: int = 0
    n_jobs: int = Field(2, gt=0)
    top_k: int = Field(100, gt=0, description="Cards an investigator checks per day.")
    cost_missed_fraud: float = Field(100.0, gt=0)
    cost_false_alarm: float = Field(5.0, gt=0)
    candidates: dict[ModelFamily, CandidateGrid] = Field(default_factory=_default_candidates)
    selection_tolerance: float = Field(
        0.005, ge=0, description="Validation AP within which the cheapest model to serve wins."
    )


class PromoteParams(_Section):
    """The holdout gate between challenger and champion.

    ``tolerance`` maps each gating metric (a key of ``fraudops.modeling.evaluation.evaluate``,
    higher is better) to how far the challenger may fall below the champion and still replace it: a
    small allowance keeps models fresh without trading away measurable quality.
    """

    tolerance: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"average_precision": 0.005, "card_precision_at_100": 0.005},
        min_length=1,
    )


#: The A/B metrics with a closed-form sample size: ratios of counts
#: (see fraudops.experiments.ab_report).
ProportionMetric = Literal["precision", "recall", "fraud_caught_per_1000"]


class ABParams(_Section):
    """Live evidence: the A/B test and the shadow comparison (see docs/experiments.md).

    ``min_detectable_lift`` is relative (0.1: the treatment 10% above the control on the
    primary metric); with ``alpha`` and ``power`` it fixes the sample the test waits for.
    ``min_sample`` and ``min_frauds`` are floors below which no verdict is given at all.
    """

    control_arm: str = "champion"
    treatment_arm: str = "challenger"
    primary_metric: ProportionMetric = "recall"
    alpha: float = Field(0.05, gt=0, lt=0.5)
    power: float = Field(0.8, gt=0.5, lt=1)
    min_detectable_lift: float = Field(0.1, gt=0)
    min_sample: int = Field(1000, gt=0, description="Labelled transactions per arm.")
    min_frauds: int = Field(20, gt=0, description="Labelled frauds per arm.")
    bootstrap_resamples: int = Field(1000, ge=100)
    seed: int = 0

    @model_validator(mode="after")
    def _two_arms(self) -> ABParams:
        if self.control_arm == self.treatment_arm:
            raise ValueError(f"control_arm and treatment_arm are both {self.control_arm!r}")
        return self


class MonitorParams(_Section):
    """Drift tests on a window of logged traffic and the thresholds of the decision.

    See docs/monitoring.md for what each number means and how the defaults were chosen.
    ``max_relative_drop`` maps a metric of ``fraudops.modeling.evaluation.evaluate`` (higher is
    better) to how far below its training-time value it may fall before the window counts as
    decayed: 0.2 means a realised value under 80 % of the training-time one.
    """

    sample_size: int = Field(20_000, gt=0, description="Rows of a window the drift tests see.")
    seed: int = 0
    min_rows: int = Field(1000, gt=0, description="Fewer valid rows: insufficient_data.")
    min_labelled_rows: int = Field(1000, gt=0)
    min_labelled_frauds: int = Field(100, gt=0)
    min_reference_frauds: int = Field(50, gt=0, description="To calibrate the estimate.")
    column_drift_threshold: float = Field(0.1, gt=0, description="Per-feature distance.")
    drifted_share: float = Field(0.2, gt=0, le=1)
    score_drift_threshold: float = Field(0.1, gt=0)
    target_p_value: float = Field(0.001, gt=0, lt=1)
    target_rate_ratio: float = Field(1.5, gt=1)
    max_relative_drop: dict[str, Annotated[float, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: {"average_precision": 0.2, "recall": 0.2, "roc_auc": 0.1},
        min_length=1,
    )


class FairnessParams(_Section):
    """Customer segments and the per-segment quality report (see docs/fairness.md).

    Segments use only a customer's transactions before the one scored, so training,
    monitoring and serving assign the same segment to the same transaction.
    ``max_fpr_ratio`` and ``max_equalized_odds_difference`` are the gap tolerances: a gap
    counts only when its whole bootstrap interval lies beyond the tolerance.
    """

    new_customer_days: int = Field(30, gt=0, description="Tenure below this: a new customer.")
    spend_tier_edges: tuple[float, ...] = Field(
        (35.0, 70.0), min_length=1, description="Increasing edges of the prior mean amount."
    )
    night_share: float = Field(0.3, gt=0, le=1, description="Night share of a night shopper.")
    min_history: int = Field(5, gt=0, description="Prior transactions before spend/night tiers.")
    region_grid: int = Field(2, gt=0, description="Regions per side of the simulated area.")
    min_group_customers: int = Field(30, gt=0, description="Smaller groups: no gap measured.")
    min_group_frauds: int = Field(10, gt=0, description="Fewer frauds: no recall gap measured.")
    bootstrap_resamples: int = Field(200, ge=50)
    confidence: float = Field(0.9, gt=0, lt=1)
    seed: int = 0
    max_fpr_ratio: float = Field(2.0, ge=1)
    max_equalized_odds_difference: float = Field(0.2, gt=0, le=1)

    @model_validator(mode="after")
    def _increasing_edges(self) -> FairnessParams:
        edges = self.spend_tier_edges
        if list(edges) != sorted(set(edges)):
            raise ValueError(f"spend_tier_edges must increase, got {list(edges)}")
        return self


class ExperimentParams(_Section):
    """A challenger's way from shadow to a promotion decision (``pipelines.experiment_flow``).

    The ``experiment/advance`` deployment moves a new challenger from shadow to an A/B test
    once it has shadow-scored ``shadow_min_scored`` requests, and asks the promotion gate
    once the A/B traffic holds ``ab_min_days`` simulated days of labels and its plan cannot
    be met within ``ab_max_days`` (or has a verdict), or once ``ab_max_days`` have passed.
    ``fraudops demo`` runs its A/B with the same numbers.
    """

    shadow_min_scored: int = Field(
        2000, gt=0, description="Shadow-scored requests of the challenger before its A/B."
    )
    ab_share: int = Field(50, gt=0, lt=100, description="Percent of customers it answers.")
    ab_min_days: int = Field(3, gt=0, description="Labelled A/B days before the plan is read.")
    ab_max_days: int = Field(10, gt=0, description="Labelled A/B days at most.")

    @model_validator(mode="after")
    def _ordered_days(self) -> ExperimentParams:
        if self.ab_max_days < self.ab_min_days:
            raise ValueError(
                f"ab_max_days ({self.ab_max_days}) is below ab_min_days ({self.ab_min_days})"
            )
        return self


LearningMode = Literal["full", "warm_start", "online"]


class OnlineLearnerParams(_Section):
    """The online learner that shadows traffic (``fraudops.modeling.online``).

    A scaled logistic regression trained by Adam, one mini-batch of labels at a time. Its
    alert threshold is the least-cost one on its own scores of the latest
    ``threshold_labels`` labels, each scored before it was learnt (prequential).
    """

    learning_rate: float = Field(0.01, gt=0, description="Adam's step size.")
    positive_weight: float = Field(10.0, gt=0, description="A fraud label's weight.")
    l2: float = Field(0.0, ge=0, description="L2 penalty on the weights.")
    snapshot_labels: int = Field(
        1000, gt=0, description="Labels per learning step; each step is a new served version."
    )
    threshold_labels: int = Field(20_000, gt=0, description="Latest labels for the threshold.")


class LearningParams(_Section):
    """How retraining learns from newly matured labels (docs/learning-modes.md).

    ``full`` retrains from scratch with the model search; ``warm_start`` adds
    ``warm_start_rounds`` boosting rounds to the champion on the labelled days it has not
    seen; ``online`` trains nothing and shadows the online learner, which learns every
    label as it arrives.
    """

    mode: LearningMode = "full"
    warm_start_rounds: int = Field(10, gt=0, description="Boosting rounds a warm start adds.")
    online: OnlineLearnerParams = OnlineLearnerParams()


class Params(_Section):
    simulate: SimulateParams = SimulateParams()
    features: FeatureParams = FeatureParams()
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    train: TrainParams = TrainParams()
    promote: PromoteParams = PromoteParams()
    ab: ABParams = ABParams()
    monitor: MonitorParams = MonitorParams()
    fairness: FairnessParams = FairnessParams()
    experiment: ExperimentParams = ExperimentParams()
    learning: LearningParams = LearningParams()

    @model_validator(mode="after")
    def _one_label_delay(self) -> Params:
        """The split's gap is the label delay: one number, stated twice, never two."""
        if self.train.delay_days != self.features.label_delay_days:
            raise ValueError(
                f"train.delay_days ({self.train.delay_days}) must equal "
                f"features.label_delay_days ({self.features.label_delay_days}): the gap between "
                "training and test is the label delay, after which every training label is usable"
            )
        return self


def load_params(path: Path | None = None) -> Params:
    """Parse ``params.yaml``; an unknown key is an error, not a silent default."""
    path = path or get_settings().params_path
    raw = yaml.safe_load(path.read_text()) or {}
    return Params.model_validate(raw)
