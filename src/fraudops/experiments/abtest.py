"""Live A/B analysis: per-arm fraud metrics with intervals, tests, a sample size, a verdict.

The router assigns whole customers to arms (a salted hash of the customer id), so the
customer is the unit of randomisation and must be the unit of analysis: one compromised
card brings several frauds, and a test that counted transactions as independent would
see more evidence than there is. Hence:

* every confidence interval is a cluster bootstrap: customers are drawn with replacement
  within each arm, each bringing all of its labelled transactions;
* precision, recall and fraud caught per 1,000 transactions are ratios of per-customer
  sums, tested with a z-test whose variance comes from the delta method over customers;
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
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, get_args

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field
from rich.table import Table
from scipy.stats import norm
from sklearn.metrics import average_precision_score
from sqlalchemy import Engine

from fraudops.config import ABParams, ProportionMetric
from fraudops.experiments.promotion_gate import Check
from fraudops.logs.prediction_log import RowKind, TimeColumn, read_predictions
from fraudops.modeling.evaluation import card_precision_at_k

MetricName = Literal[ProportionMetric, "average_precision", "card_precision_at_k"]
METRICS: tuple[MetricName, ...] = get_args(MetricName)
PROPORTION_METRICS: tuple[ProportionMetric, ...] = get_args(ProportionMetric)
Recommendation = Literal["promote", "keep", "need_more_data"]

# Columns of an arm's per-customer sums; every proportion metric is true positives over one.
_TP, _ALERTS, _FRAUDS, _TRANSACTIONS = range(4)
_DENOMINATOR: dict[ProportionMetric, int] = {
    "precision": _ALERTS,
    "recall": _FRAUDS,
    "fraud_caught_per_1000": _TRANSACTIONS,
}
_SCALE: dict[ProportionMetric, float] = {"fraud_caught_per_1000": 1000.0}
_CELLS_PER_BLOCK = 4_000_000  # resamples x rows held in memory at once (~32 MB of floats)
_TESTS = {
    **dict.fromkeys(PROPORTION_METRICS, "delta-method z-test over customers"),
    "average_precision": "customer bootstrap of the difference",
    "card_precision_at_k": "customer bootstrap of the difference",
}


# --- statistics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RatioSums:
    """Sums over independent clusters of a ratio metric's parts: sum(y) / sum(x).

    They are all its delta-method variance needs. Fields may be arrays (one value per
    simulated experiment): every property is elementwise.
    """

    clusters: ArrayLike
    y: ArrayLike
    x: ArrayLike
    yy: ArrayLike
    xx: ArrayLike
    xy: ArrayLike

    @classmethod
    def of(cls, y: ArrayLike, x: ArrayLike) -> RatioSums:
        """From per-cluster numerators and denominators along the last axis."""
        y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
        return cls(
            clusters=y.shape[-1],
            y=y.sum(-1),
            x=x.sum(-1),
            yy=(y * y).sum(-1),
            xx=(x * x).sum(-1),
            xy=(x * y).sum(-1),
        )

    @property
    def ratio(self) -> NDArray[np.float64]:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.divide(self.y, self.x)

    @property
    def variance(self) -> NDArray[np.float64]:
        """Var(sum y / sum x) ~ (s_yy - 2 R s_xy + R^2 s_xx) / (n mean_x^2) (Deng et al. 2018)."""
        n = np.asarray(self.clusters, dtype=float)
        y, x = np.asarray(self.y, dtype=float), np.asarray(self.x, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            s_yy = (self.yy - y * y / n) / (n - 1)
            s_xx = (self.xx - x * x / n) / (n - 1)
            s_xy = (self.xy - x * y / n) / (n - 1)
            ratio = self.ratio
            spread = s_yy - 2 * ratio * s_xy + ratio**2 * s_xx
            return np.maximum(spread, 0.0) / (n * (x / n) ** 2)


def ratio_z_test(
    control: RatioSums, treatment: RatioSums
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two-sided z-test of equal ratios; returns (z, p). Elementwise over experiments.

    With one transaction per customer this is the unpooled two-proportion z-test; with
    clustered transactions the delta-method variance widens it as much as the clustering
    demands. A difference with no variance at all is certain (p = 0) or absent (p = 1).
    """
    difference = treatment.ratio - control.ratio
    error = np.sqrt(control.variance + treatment.variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = difference / error
    p = np.where(error > 0, 2 * norm.sf(np.abs(z)), np.where(difference == 0, 1.0, 0.0))
    return z, np.where(np.isnan(difference), np.nan, p)


def required_sample_size(
    baseline: float, relative_lift: float, *, alpha: float, power: float
) -> float | None:
    """Units per arm for a two-sided z-test to detect baseline -> baseline * (1 + lift).

    n = (z_{1-alpha/2} + z_{power})^2 (p1 q1 + p2 q2) / (p2 - p1)^2, the closed form for
    two independent proportions. None when the lift cannot be reached (p2 >= 1) or the
    baseline is degenerate (0 or 1), where no sample can show it.
    """
    target = baseline * (1 + relative_lift)
    if not 0 < baseline < 1 or not 0 < target < 1 or target == baseline:
        return None
    z = norm.ppf(1 - alpha / 2) + norm.ppf(power)
    spread = baseline * (1 - baseline) + target * (1 - target)
    return float(z**2 * spread / (target - baseline) ** 2)


def cluster_resample_counts(
    rng: np.random.Generator, clusters: int, resamples: int, block: int
) -> Iterator[NDArray[np.int64]]:
    """How often each cluster is drawn in each resample (``clusters`` draws with replacement).

    Yields blocks of at most ``block`` resamples, so memory stays bounded for any size.
    """
    for start in range(0, resamples, block):
        size = min(block, resamples - start)
        picks = rng.integers(0, clusters, size=(size, clusters))
        picks += np.arange(size)[:, None] * clusters
        yield np.bincount(picks.ravel(), minlength=size * clusters).reshape(size, clusters)


def weighted_average_precision(
    label: NDArray, score: NDArray, weights: NDArray
) -> NDArray[np.float64]:
    """scikit-learn's average precision for each row of ``weights`` (resamples x rows) at once.

    Same step sum as ``average_precision_score(label, score, sample_weight=w)``, (recall
    step) x (precision) at each distinct score, but one sort serves every resample; a
    loop over scikit-learn takes a hundred times longer. NaN for a resample with no fraud.
    """
    order = np.argsort(-score, kind="stable")
    ranked = score[order]
    group_ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    weights = weights[:, order].astype(float)
    caught = np.cumsum(weights * label[order], axis=1)[:, group_ends]
    flagged = np.cumsum(weights, axis=1)[:, group_ends]
    precision = np.divide(caught, flagged, out=np.zeros_like(caught), where=flagged > 0)
    recall_steps = np.diff(caught, axis=1, prepend=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (recall_steps * precision).sum(axis=1) / caught[:, -1]


def bootstrap_p_value(differences: NDArray) -> float:
    """Two-sided p of "no difference" from bootstrap draws of a difference.

    The smallest alpha whose percentile interval excludes zero, so the test rejects
    exactly when the reported interval of the difference does not contain zero.
    """
    draws = differences[~np.isnan(differences)]
    if len(draws) == 0:
        return math.nan
    return float(min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0))))


# --- one arm -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmSample:
    """One arm's labelled transactions, with customers coded 0..C-1 (the resampled unit)."""

    label: NDArray[np.int8]
    score: NDArray[np.float64]
    alert: NDArray[np.bool_]
    customer: NDArray[np.int64]
    day: NDArray
    card_k: int

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, card_k: int) -> ArmSample:
        """The labelled rows of a prediction-log frame; unlabelled ones are not evidence yet."""
        labelled = frame[frame["label"].notna()]
        customer, _ = pd.factorize(labelled["customer_hash"])
        return cls(
            label=labelled["label"].to_numpy(dtype=np.int8),
            score=labelled["score"].to_numpy(dtype=float),
            alert=labelled["decision"].to_numpy(dtype=bool),
            customer=customer.astype(np.int64),
            day=pd.to_datetime(labelled["tx_datetime"]).to_numpy().astype("datetime64[D]"),
            card_k=card_k,
        )

    @property
    def transactions(self) -> int:
        return len(self.label)

    @property
    def customers(self) -> int:
        return int(self.customer.max()) + 1 if len(self.customer) else 0

    @cached_property
    def customer_sums(self) -> NDArray[np.float64]:
        """Per customer: true positives, alerts, frauds, transactions (see ``_TP`` etc.)."""
        fraud = self.label == 1
        parts = (self.alert & fraud, self.alert, fraud, np.ones_like(fraud))
        return np.column_stack(
            [np.bincount(self.customer, part, minlength=self.customers) for part in parts]
        )

    def ratio_sums(self, metric: ProportionMetric) -> RatioSums:
        sums = self.customer_sums
        return RatioSums.of(sums[:, _TP], sums[:, _DENOMINATOR[metric]])

    def estimate(self, metric: MetricName) -> float | None:
        """The metric on this arm's data; None where it is undefined (no fraud, no alert)."""
        if metric in PROPORTION_METRICS:
            totals = self.customer_sums.sum(axis=0)
            denominator = totals[_DENOMINATOR[metric]]
            if denominator == 0:
                return None
            return float(totals[_TP] / denominator * _SCALE.get(metric, 1.0))
        if not self.label.any():
            return None
        if metric == "average_precision":
            return float(average_precision_score(self.label, self.score))
        return card_precision_at_k(self.label, self.score, self.customer, self.day, self.card_k)

    def draws(
        self, rng: np.random.Generator, resamples: int, metrics: Collection[MetricName] = METRICS
    ) -> dict[MetricName, NDArray[np.float64]]:
        """Each metric on ``resamples`` customer-cluster bootstrap resamples of the arm.

        All metrics share the same resamples, so their draws are jointly consistent.
        """
        block = max(1, min(resamples, _CELLS_PER_BLOCK // max(self.transactions, 1)))
        parts: dict[MetricName, list[NDArray]] = {metric: [] for metric in metrics}
        for counts in cluster_resample_counts(rng, self.customers, resamples, block):
            for metric in metrics:
                parts[metric].append(self.resampled(metric, counts))
        return {metric: np.concatenate(values) for metric, values in parts.items()}

    def resampled(self, metric: MetricName, counts: NDArray[np.int64]) -> NDArray:
        """The metric on each resample given as per-customer draw counts (resamples x C)."""
        if metric in PROPORTION_METRICS:
            sums = counts @ self.customer_sums
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = sums[:, _TP] / sums[:, _DENOMINATOR[metric]]
            return ratio * _SCALE.get(metric, 1.0)
        if metric == "average_precision":
            return weighted_average_precision(self.label, self.score, counts[:, self.customer])
        return np.array([self._card_precision_of(row) for row in counts])

    def _card_precision_of(self, counts: NDArray[np.int64]) -> float:
        """Card precision of one resample: a customer drawn twice is two distinct cards."""
        days = self._card_days
        chosen = np.repeat(np.arange(self.customers), counts)
        sizes = days.sizes[chosen]
        card = np.repeat(np.arange(len(chosen)), sizes)
        within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        rows = np.repeat(days.starts[chosen], sizes) + within
        if not days.label[rows].any():
            return math.nan
        return card_precision_at_k(
            days.label[rows], days.score[rows], card, days.day[rows], self.card_k
        )

    @cached_property
    def _card_days(self) -> _CardDays:
        """One row per customer and day, with the day's highest score and any fraud.

        Card precision keeps only that much of a card's day, so resampling these rows
        gives the same values as resampling transactions, at a fraction of the cost.
        """
        grouped = (
            pd.DataFrame(
                {
                    "customer": self.customer,
                    "day": self.day,
                    "score": self.score,
                    "label": self.label,
                }
            )
            .groupby(["customer", "day"], sort=True)
            .max()
            .reset_index()
        )
        sizes = np.bincount(grouped["customer"], minlength=self.customers)
        return _CardDays(
            day=grouped["day"].to_numpy(),
            score=grouped["score"].to_numpy(),
            label=grouped["label"].to_numpy(),
            sizes=sizes,
            starts=np.cumsum(sizes) - sizes,
        )


@dataclass(frozen=True)
class _CardDays:
    """Card-day rows sorted by customer; ``starts``/``sizes`` locate each customer's rows."""

    day: NDArray
    score: NDArray[np.float64]
    label: NDArray[np.int8]
    sizes: NDArray[np.int64]
    starts: NDArray[np.int64]


# --- the report ----------------------------------------------------------------------------


class ReportModel(BaseModel):
    """Report parts: immutable, and strict about fields so a stale JSON fails loudly."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ReportWindow(ReportModel):
    """Which logged traffic a report read: ``read_predictions``'s window, recorded."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None
    last_n: int | None = Field(None, ge=1)
    time_column: TimeColumn = "logged_at"
    labels_received_by: dt.datetime | None = None

    def read(self, engine: Engine, rows: RowKind) -> pd.DataFrame:
        """The window's rows; naive bounds are taken as UTC on the aware ``logged_at`` clock."""
        return read_predictions(
            engine,
            start=self._on_clock(self.start),
            end=self._on_clock(self.end),
            last_n=self.last_n,
            time_column=self.time_column,
            labels_received_by=_as_utc(self.labels_received_by),
            rows=rows,
        )

    def _on_clock(self, moment: dt.datetime | None) -> dt.datetime | None:
        if moment is None:
            return None
        if self.time_column == "logged_at":
            return _as_utc(moment)
        return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _as_utc(moment: dt.datetime | None) -> dt.datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)


class MetricEstimate(ReportModel):
    """A metric's value on one arm and its bootstrap interval (None where undefined)."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None


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

    def comparison(self, metric: MetricName) -> Comparison | None:
        return next((c for c in self.comparisons if c.metric == metric), None)


def analyse_ab(
    frame: pd.DataFrame, params: ABParams, *, top_k: int, window: ReportWindow | None = None
) -> ABResult:
    """The A/B result of served prediction-log rows (``read_predictions(rows="served")``).

    Only labelled rows are evidence. Card precision's k is ``top_k`` scaled by the arm's
    share of served traffic: an investigation team checking ``top_k`` cards a day over all
    traffic checks that share of them in each arm, so arms of unequal weight compare fairly.
    """
    names = (params.control_arm, params.treatment_arm)
    total_served = len(frame)
    arm_frames = [frame[frame["arm"] == name] for name in names]
    samples = [
        ArmSample.from_frame(rows, _scaled_k(top_k, len(rows), total_served)) for rows in arm_frames
    ]
    shortfall = _shortfall(names, samples, params)
    draws: list[dict[MetricName, NDArray]] = [{}, {}]
    comparisons: list[Comparison] = []
    design = required = None
    if shortfall is None:
        seeds = np.random.SeedSequence(params.seed).spawn(2)
        draws = [
            sample.draws(np.random.default_rng(seed), params.bootstrap_resamples)
            for sample, seed in zip(samples, seeds, strict=True)
        ]
        comparisons = [_compare(metric, *samples, *draws, params) for metric in METRICS]
        design = design_effect(samples[0].ratio_sums(params.primary_metric))
        required = next(
            c for c in comparisons if c.metric == params.primary_metric
        ).required_per_arm
    arms = [
        _summarise(name, rows, sample, arm_draws, params.alpha)
        for name, rows, sample, arm_draws in zip(names, arm_frames, samples, draws, strict=True)
    ]
    recommendation, reason = _recommend(shortfall, arms, comparisons, required, params)
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
    )


def _scaled_k(top_k: int, arm_rows: int, total_rows: int) -> int:
    return max(1, round(top_k * arm_rows / total_rows)) if total_rows else top_k


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


def design_effect(sums: RatioSums) -> float | None:
    """Variance over customers / variance as if transactions were independent, at least 1."""
    ratio, units = float(sums.ratio), float(sums.x)
    if not 0 < ratio < 1 or sums.clusters < 2:
        return None
    return max(1.0, float(sums.variance) / (ratio * (1 - ratio) / units))


def _compare(
    metric: MetricName,
    control: ArmSample,
    treatment: ArmSample,
    control_draws: dict[MetricName, NDArray],
    treatment_draws: dict[MetricName, NDArray],
    params: ABParams,
) -> Comparison:
    before, after = control.estimate(metric), treatment.estimate(metric)
    differences = treatment_draws[metric] - control_draws[metric]
    ci_low, ci_high = _interval(differences, params.alpha)
    required = None
    if metric in PROPORTION_METRICS:
        _, p = ratio_z_test(control.ratio_sums(metric), treatment.ratio_sums(metric))
        p_value = float(p)
        required = _required_transactions(metric, control, params)
    else:
        p_value = bootstrap_p_value(differences)
    defined = before is not None and after is not None
    return Comparison(
        metric=metric,
        control=before,
        treatment=after,
        difference=after - before if defined else None,
        relative_lift=(after - before) / before if defined and before else None,
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


def _interval(draws: NDArray | None, alpha: float) -> tuple[float | None, float | None]:
    """The percentile interval; resamples where the metric is undefined are left out."""
    if draws is None or np.isnan(draws).all():
        return None, None
    low, high = np.nanquantile(draws, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _estimate(value: float | None, draws: NDArray | None, alpha: float) -> MetricEstimate:
    low, high = _interval(draws, alpha)
    return MetricEstimate(value=value, ci_low=low, ci_high=high)


def _summarise(
    name: str,
    rows: pd.DataFrame,
    sample: ArmSample,
    draws: dict[MetricName, NDArray],
    alpha: float,
) -> ArmSummary:
    totals = sample.customer_sums.sum(axis=0)
    return ArmSummary(
        arm=name,
        model_versions=sorted(rows["model_version"].astype(str).unique()),
        served=len(rows),
        labelled=sample.transactions,
        frauds=int(totals[_FRAUDS]),
        alerts=int(totals[_ALERTS]),
        customers=sample.customers,
        card_k=sample.card_k,
        metrics={
            metric: _estimate(sample.estimate(metric), draws.get(metric), alpha)
            for metric in METRICS
        },
    )


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


# --- the promotion gate's view -------------------------------------------------------------


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


# --- display -------------------------------------------------------------------------------


def ab_table(result: ABResult) -> Table:
    """The per-arm metrics and the comparison, one metric a row."""
    control, treatment = result.arms
    level = f"{1 - result.alpha:.0%}"
    table = Table(
        title=f"A/B: {treatment.arm} vs {control.arm} ({level} intervals)",
        caption=f"{result.recommendation.upper()}: {result.reason}",
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
    return table


def _metric_label(metric: MetricName, control: ArmSummary, treatment: ArmSummary) -> str:
    if metric != "card_precision_at_k":
        return metric
    return f"card precision@{control.card_k} | @{treatment.card_k}"


def format_number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def format_estimate(estimate: MetricEstimate) -> str:
    if estimate.ci_low is None or estimate.ci_high is None:
        return format_number(estimate.value)
    return f"{format_number(estimate.value)} [{estimate.ci_low:.4g}, {estimate.ci_high:.4g}]"


def _shown_difference(comparison: Comparison | None) -> str:
    if comparison is None:
        return "-"
    interval = MetricEstimate(
        value=comparison.difference, ci_low=comparison.ci_low, ci_high=comparison.ci_high
    )
    return format_estimate(interval)
