"""A/B statistics on simulated experiments whose truth is known.

Size and power are checked the way they are defined: many experiments are simulated
(vectorised, as per-customer sums), and the share that rejects is compared with alpha
under no difference and with the nominal power at the computed sample size, within a
binomial tolerance of three standard errors. Where a library does the same thing
(scikit-learn's average precision, statsmodels' two-proportion test) it is the reference.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score
from statsmodels.stats import proportion

from fraudops.experiments.ab_arm import ArmSample
from fraudops.experiments.ab_statistics import (
    RatioSums,
    bootstrap_p_value,
    design_effect,
    ratio_z_test,
    required_sample_size,
    weighted_average_precision,
)

ALPHA = 0.05
EXPERIMENTS = 1000


def within_binomial_tolerance(rate: float, expected: float, trials: int) -> bool:
    return abs(rate - expected) <= 3 * math.sqrt(expected * (1 - expected) / trials)


def clustered_arm(
    rng: np.random.Generator, experiments: int, customers: int, catch: float = 0.6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per customer: transactions, frauds, frauds caught. Fraud comes in bursts on a few
    cards, and a model tends to catch all of a card's frauds or none (they look alike):
    Beta propensities for both make customers strong clusters. ``catch`` is the recall."""
    shape = (experiments, customers)
    transactions = 1 + rng.poisson(9, shape)
    frauds = rng.binomial(transactions, rng.beta(0.2, 3.8, shape))
    return transactions, frauds, rng.binomial(frauds, rng.beta(catch, 1 - catch, shape))


def bernoulli_sums(caught: np.ndarray, units: np.ndarray) -> RatioSums:
    """Ratio sums when each unit is its own cluster with a 0/1 outcome (no clustering)."""
    return RatioSums(clusters=units, y=caught, x=units, yy=caught, xx=units, xy=caught)


def test_the_z_test_rejects_a_true_null_at_rate_alpha_despite_clustering() -> None:
    rng = np.random.default_rng(11)
    arms = [clustered_arm(rng, EXPERIMENTS, 800) for _ in range(2)]
    for denominator in (0, 1):  # fraud caught per transaction; recall (per fraud)
        sums = [RatioSums.of(arm[2], arm[denominator]) for arm in arms]
        _, p = ratio_z_test(*sums)

        assert within_binomial_tolerance(np.mean(p < ALPHA), ALPHA, EXPERIMENTS)


def test_counting_transactions_as_independent_would_reject_far_too_often() -> None:
    # The reason for customer clusters: the same data, tested as independent transactions.
    rng = np.random.default_rng(12)
    arms = [clustered_arm(rng, EXPERIMENTS, 800) for _ in range(2)]
    naive = [bernoulli_sums(caught.sum(1), frauds.sum(1)) for _, frauds, caught in arms]
    _, p = ratio_z_test(*naive)

    assert np.mean(p < ALPHA) > 3 * ALPHA


@pytest.mark.parametrize(("baseline", "lift"), [(0.006, 0.25), (0.3, 0.1), (0.6, 0.05)])
def test_power_at_the_computed_sample_size_is_the_nominal_power(
    baseline: float, lift: float
) -> None:
    rng = np.random.default_rng(13)
    n = math.ceil(required_sample_size(baseline, lift, alpha=ALPHA, power=0.8))
    control = rng.binomial(n, baseline, EXPERIMENTS)
    treatment = rng.binomial(n, baseline * (1 + lift), EXPERIMENTS)
    _, p = ratio_z_test(bernoulli_sums(control, n), bernoulli_sums(treatment, n))

    assert abs(np.mean(p < ALPHA) - 0.8) <= 0.05


def test_recall_power_holds_when_transactions_are_converted_through_the_fraud_rate() -> None:
    # The sample is in frauds; the arm collects transactions, whose fraud count varies.
    rng = np.random.default_rng(14)
    fraud_rate, recall, lift = 0.01, 0.5, 0.2
    frauds_needed = required_sample_size(recall, lift, alpha=ALPHA, power=0.8)
    transactions = math.ceil(frauds_needed / fraud_rate)
    sums = []
    for arm_recall in (recall, recall * (1 + lift)):
        frauds = rng.binomial(transactions, fraud_rate, EXPERIMENTS)
        sums.append(bernoulli_sums(rng.binomial(frauds, arm_recall), frauds))
    _, p = ratio_z_test(*sums)

    assert abs(np.mean(p < ALPHA) - 0.8) <= 0.05


def test_scaling_the_sample_by_the_design_effect_restores_power_under_clustering() -> None:
    rng = np.random.default_rng(15)
    pilot = clustered_arm(rng, 1, 200_000)
    pilot_sums = RatioSums.of(pilot[2][0], pilot[1][0])
    deff = design_effect(pilot_sums)
    frauds_per_customer = float(pilot_sums.x) / 200_000
    frauds_needed = required_sample_size(0.6, 0.1, alpha=ALPHA, power=0.8)
    customers = math.ceil(frauds_needed * deff / frauds_per_customer)
    rejected = 0
    for _ in range(4):  # 4 x 250 experiments: the same test, a quarter of the memory
        control = clustered_arm(rng, 250, customers, catch=0.6)
        treatment = clustered_arm(rng, 250, customers, catch=0.66)
        _, p = ratio_z_test(*(RatioSums.of(arm[2], arm[1]) for arm in (control, treatment)))
        rejected += int(np.sum(p < ALPHA))

    assert deff > 2
    assert abs(rejected / EXPERIMENTS - 0.8) <= 0.05


def test_required_sample_size_matches_the_textbook_formula() -> None:
    # p 0.10 -> 0.15, two-sided 5%, power 80%: (1.96 + 0.8416)^2 (0.09 + 0.1275) / 0.05^2
    z = norm.ppf(0.975) + norm.ppf(0.8)
    expected = z**2 * (0.10 * 0.90 + 0.15 * 0.85) / 0.05**2

    assert required_sample_size(0.10, 0.5, alpha=0.05, power=0.8) == pytest.approx(expected)
    assert round(expected) == 683
    assert required_sample_size(0.8, 0.5, alpha=0.05, power=0.8) is None  # beyond 1
    assert required_sample_size(0.0, 0.5, alpha=0.05, power=0.8) is None
    smaller_lift = required_sample_size(0.10, 0.25, alpha=0.05, power=0.8)
    assert smaller_lift > 3 * expected


def arm_from_customers(
    transactions: np.ndarray, frauds: np.ndarray, caught: np.ndarray, rng: np.random.Generator
) -> ArmSample:
    """Transaction rows for per-customer counts: the first `frauds` rows of a customer are
    frauds, the first `caught` of those alerted; scores rank alerts first."""
    customer = np.repeat(np.arange(len(transactions)), transactions)
    position = np.arange(len(customer)) - np.repeat(
        np.cumsum(transactions) - transactions, transactions
    )
    label = position < frauds[customer]
    alert = position < caught[customer]
    return ArmSample(
        label=label.astype(np.int8),
        score=alert + rng.random(len(customer)) * 0.5,
        alert=alert,
        customer=customer,
        day=np.full(len(customer), np.datetime64("2026-01-01", "D")),
        card_k=10,
    )


def test_the_customer_bootstrap_interval_covers_the_true_recall_at_its_level() -> None:
    rng = np.random.default_rng(16)
    experiments, covered = 300, 0
    for transactions, frauds, caught in zip(*clustered_arm(rng, experiments, 600), strict=True):
        arm = arm_from_customers(transactions, frauds, caught, rng)
        draws = arm.draws(rng, 400, ["recall"])["recall"]
        low, high = np.nanquantile(draws, [ALPHA / 2, 1 - ALPHA / 2])
        covered += low <= 0.6 <= high

    assert within_binomial_tolerance(covered / experiments, 1 - ALPHA, experiments)


def scored_arm(rng: np.random.Generator, rows: int, separation: float) -> ArmSample:
    customers = rows // 3
    customer = rng.integers(0, customers, rows)
    label = (rng.random(customers)[customer] < 0.1) & (rng.random(rows) < 0.6)
    score = rng.normal(size=rows) + separation * label
    return ArmSample(
        label=label.astype(np.int8),
        score=score,
        alert=score > 2,
        customer=pd.factorize(customer)[0],
        day=np.full(rows, np.datetime64("2026-01-01", "D")),
        card_k=20,
    )


def test_the_bootstrap_test_of_average_precision_keeps_its_size_and_finds_a_real_gap() -> None:
    rng = np.random.default_rng(17)
    null_p, real_p = [], []
    for _ in range(200):
        control = scored_arm(rng, 1200, 1.5).draws(rng, 200, ["average_precision"])
        same = scored_arm(rng, 1200, 1.5).draws(rng, 200, ["average_precision"])
        better = scored_arm(rng, 1200, 2.5).draws(rng, 200, ["average_precision"])
        null_p.append(bootstrap_p_value(same["average_precision"] - control["average_precision"]))
        real_p.append(bootstrap_p_value(better["average_precision"] - control["average_precision"]))

    assert np.mean(np.array(null_p) < ALPHA) <= ALPHA + 3 * math.sqrt(ALPHA * 0.95 / 200)
    assert np.mean(np.array(real_p) < ALPHA) > 0.9


def test_vectorised_average_precision_equals_scikit_learn_with_weights_and_ties() -> None:
    rng = np.random.default_rng(18)
    label = (rng.random(400) < 0.15).astype(np.int8)
    score = np.round(rng.random(400) + 0.4 * label, 1)  # few distinct values: many ties
    weights = rng.integers(0, 3, size=(6, 400))

    expected = [average_precision_score(label, score, sample_weight=w) for w in weights]

    np.testing.assert_allclose(weighted_average_precision(label, score, weights), expected)


def test_card_precision_resamples_count_a_customer_drawn_twice_as_two_cards() -> None:
    day = np.full(2, np.datetime64("2026-01-01", "D"))
    arm = ArmSample(
        label=np.array([1, 0], dtype=np.int8),
        score=np.array([0.9, 0.1]),
        alert=np.array([True, False]),
        customer=np.array([0, 1]),
        day=day,
        card_k=2,
    )

    assert arm.estimate("card_precision_at_k") == 0.5
    draws = arm.resampled("card_precision_at_k", np.array([[1, 1], [2, 0], [0, 2]]))
    np.testing.assert_array_equal(draws, [0.5, 1.0, np.nan])


def test_bootstrap_p_value_is_the_percentile_interval_inverted() -> None:
    assert bootstrap_p_value(np.array([1.0, 2.0, 3.0, -1.0])) == 0.5
    assert bootstrap_p_value(np.array([1.0, 2.0])) == 0.0
    assert math.isnan(bootstrap_p_value(np.array([np.nan])))


def test_without_clustering_the_z_test_is_the_two_proportion_wald_test() -> None:
    # One transaction per customer: statsmodels' unpooled test, but for the n - 1 of a
    # sample variance (relative 5e-5 on z here); the pooled test is 3 % off on z, 18 % on p.
    control, treatment = (10_000, 100_000), (1_080, 10_000)
    z, p = ratio_z_test(*(bernoulli_sums(caught, units) for caught, units in (control, treatment)))
    wald = proportion.test_proportions_2indep(*treatment, *control, method="wald")

    assert 0.01 < wald.pvalue < 0.02
    assert float(z) == pytest.approx(wald.statistic, rel=1e-4)
    assert float(p) == pytest.approx(wald.pvalue, rel=1e-3)
