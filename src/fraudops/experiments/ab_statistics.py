"""A/B statistics for customer-clustered ratios: delta-method test, bootstrap, sample size.

The router assigns whole customers to arms, so the customer is the unit of analysis: one
compromised card brings several frauds, and a test that counted transactions as
independent would see more evidence than there is. Every metric of the A/B report is a
ratio of per-customer sums (frauds caught over frauds, over alerts, over transactions) or
a ranking metric with no closed form at all.

No library tests a ratio of sums over clusters, so two methods are ours:

* the delta method (Deng et al. 2018) for the variance of sum(y) / sum(x) over customers,
  and the z-test built on it (``RatioSums``, ``ratio_z_test``, ``design_effect``);
* the customer-cluster bootstrap: resample counts per customer, the vectorised weighted
  average precision that scores every resample with one sort, and the p-value that
  inverts the percentile interval.

What a library does the same way comes from statsmodels: the sample size for two
independent proportions (``statsmodels.stats.power``). Everything here is pure: arrays
in, numbers out; reading the log, the verdict and the tables live elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm
from statsmodels.stats.power import normal_sample_size_one_tail


@dataclass(frozen=True)
class RatioSums:
    """Sums over independent clusters of a ratio metric's parts: sum(y) / sum(x).

    They are all its delta-method variance needs. Fields may be arrays (one value per
    simulated experiment): every property is elementwise.
    """

    clusters: int | NDArray[np.int64]
    y: float | NDArray[np.float64]
    x: float | NDArray[np.float64]
    yy: float | NDArray[np.float64]
    xx: float | NDArray[np.float64]
    xy: float | NDArray[np.float64]

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
            ratio: NDArray[np.float64] = np.divide(self.y, self.x)
        return ratio

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
            variance: NDArray[np.float64] = np.maximum(spread, 0.0) / (n * (x / n) ** 2)
        return variance


def ratio_z_test(
    control: RatioSums, treatment: RatioSums
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two-sided z-test of equal ratios; returns (z, p). Elementwise over experiments.

    With one transaction per customer this is the unpooled (Wald) two-proportion z-test,
    statsmodels' ``test_proportions_2indep(method="wald")``, but for the n - 1 of a sample
    variance; with clustered transactions the delta-method variance widens it as much as
    the clustering demands, which no library's proportion test does. A difference with no
    variance at all is certain (p = 0) or absent (p = 1).
    """
    difference = treatment.ratio - control.ratio
    error = np.sqrt(control.variance + treatment.variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = difference / error
    p = np.where(error > 0, 2 * norm.sf(np.abs(z)), np.where(difference == 0, 1.0, 0.0))
    return z, np.where(np.isnan(difference), np.nan, p)


def design_effect(sums: RatioSums) -> float | None:
    """Variance over customers / variance as if transactions were independent, at least 1."""
    ratio, units = float(sums.ratio), float(sums.x)
    if not 0 < ratio < 1 or sums.clusters < 2:
        return None
    return max(1.0, float(sums.variance) / (ratio * (1 - ratio) / units))


def required_sample_size(
    baseline: float, relative_lift: float, *, alpha: float, power: float
) -> float | None:
    """Units per arm for a two-sided z-test to detect baseline -> baseline * (1 + lift).

    n = (z_{1-alpha/2} + z_{power})^2 (p1 q1 + p2 q2) / (p2 - p1)^2, the closed form for
    two independent proportions with the unpooled variance under both hypotheses (the
    variance ``ratio_z_test`` uses), computed by statsmodels' one-tail normal sample size
    at alpha/2. Not ``NormalIndPower`` with ``proportion_effectsize``: that is Cohen's
    arcsine effect size, a different approximation with different numbers. None when the
    lift cannot be reached (p2 >= 1) or the baseline is degenerate (0 or 1), where no
    sample can show it.
    """
    target = baseline * (1 + relative_lift)
    if not 0 < baseline < 1 or not 0 < target < 1 or target == baseline:
        return None
    spread = math.sqrt(baseline * (1 - baseline) + target * (1 - target))
    return float(normal_sample_size_one_tail(target - baseline, power, alpha / 2, std_null=spread))


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
    label: NDArray[Any], score: NDArray[np.float64], weights: NDArray[np.int64]
) -> NDArray[np.float64]:
    """scikit-learn's average precision for each row of ``weights`` (resamples x rows) at once.

    Same step sum as ``average_precision_score(label, score, sample_weight=w)``, (recall
    step) x (precision) at each distinct score, but one sort serves every resample; a
    loop over scikit-learn takes a hundred times longer. NaN for a resample with no fraud.
    """
    order = np.argsort(-score, kind="stable")
    ranked = score[order]
    group_ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    weighted = weights[:, order].astype(float)
    caught = np.cumsum(weighted * label[order], axis=1)[:, group_ends]
    flagged = np.cumsum(weighted, axis=1)[:, group_ends]
    precision = np.divide(caught, flagged, out=np.zeros_like(caught), where=flagged > 0)
    recall_steps = np.diff(caught, axis=1, prepend=0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        average: NDArray[np.float64] = (recall_steps * precision).sum(axis=1) / caught[:, -1]
    return average


def percentile_interval(
    draws: NDArray[np.float64] | None, alpha: float
) -> tuple[float | None, float | None]:
    """The bootstrap percentile interval; resamples where the metric is undefined are left out."""
    if draws is None or np.isnan(draws).all():
        return None, None
    low, high = np.nanquantile(draws, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_p_value(differences: NDArray[np.float64]) -> float:
    """Two-sided p of "no difference" from bootstrap draws of a difference.

    The smallest alpha whose percentile interval excludes zero, so the test rejects
    exactly when the reported interval of the difference does not contain zero.
    """
    draws = differences[~np.isnan(differences)]
    if len(draws) == 0:
        return math.nan
    below, above = float(np.mean(draws <= 0)), float(np.mean(draws >= 0))
    return min(1.0, 2 * min(below, above))
