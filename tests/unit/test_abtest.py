"""A/B statistics on simulated experiments whose truth is known, and the report built on them.

Size and power are checked the way they are defined: many experiments are simulated
(vectorised, as per-customer sums), and the share that rejects is compared with alpha
under no difference and with the nominal power at the computed sample size, within a
binomial tolerance of three standard errors.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score
from typer.testing import CliRunner

from fraudops.cli import app
from fraudops.config import ABParams, get_settings
from fraudops.experiments.abtest import (
    ABResult,
    ArmSample,
    RatioSums,
    ab_check,
    analyse_ab,
    bootstrap_p_value,
    design_effect,
    live_evidence_allows_promotion,
    ratio_z_test,
    required_sample_size,
    weighted_average_precision,
)
from fraudops.logs.prediction_log import (
    LabelRecord,
    PredictionLogWriter,
    PredictionRecord,
    open_prediction_log,
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


# --- the report on prediction-log frames ---------------------------------------------------

FAST = ABParams(min_sample=200, min_frauds=10, bootstrap_resamples=200, min_detectable_lift=0.5)


def log_frame(
    rng: np.random.Generator,
    customers: int,
    separation: dict[str, float],
    *,
    weights: tuple[float, float] = (0.5, 0.5),
    labelled_share: float = 1.0,
) -> pd.DataFrame:
    """Served prediction-log rows of an A/B test over ten days with known model quality."""
    arm = rng.choice(list(separation), customers, p=weights)
    size = 1 + rng.poisson(4, customers)
    customer = np.repeat(np.arange(customers), size)
    rows = len(customer)
    fraud = (rng.random(customers) < 0.1)[customer] & (rng.random(rows) < 0.5)
    gap = np.array([separation[name] for name in arm])[customer]
    score = 1 / (1 + np.exp(3 - rng.normal(size=rows) - gap * fraud))
    label = pd.array(np.where(rng.random(rows) < labelled_share, fraud, None), dtype="Int8")
    seconds = rng.integers(0, 10 * 86_400, rows)
    return pd.DataFrame(
        {
            "arm": arm[customer],
            "customer_hash": [f"c{c}" for c in customer],
            "model_version": np.where(arm[customer] == "champion", "1", "2"),
            "score": score,
            "decision": score >= 0.5,
            "label": label,
            "tx_datetime": pd.Timestamp("2026-01-01") + pd.to_timedelta(seconds, unit="s"),
        }
    )


def test_a_clearly_better_challenger_is_promoted() -> None:
    frame = log_frame(np.random.default_rng(21), 4000, {"champion": 2.0, "challenger": 4.0})

    result = analyse_ab(frame, FAST, top_k=100)

    assert result.recommendation == "promote", result.reason
    recall = result.comparison("recall")
    assert recall.better and recall.ci_low > 0
    assert min(arm.labelled for arm in result.arms) >= result.required_per_arm
    assert live_evidence_allows_promotion(result) is True
    check = ab_check(result)
    assert check.passed and check.numbers["ab.recall.difference"] == recall.difference


def test_a_worse_challenger_is_kept_out_at_any_sample_size() -> None:
    frame = log_frame(np.random.default_rng(22), 3000, {"champion": 4.0, "challenger": 1.5})
    params = FAST.model_copy(update={"min_detectable_lift": 0.01})  # far from the horizon

    result = analyse_ab(frame, params, top_k=100)

    assert result.recommendation == "keep"
    assert "significantly worse" in result.reason and "recall" in result.reason
    assert min(arm.labelled for arm in result.arms) < result.required_per_arm
    assert live_evidence_allows_promotion(result) is False
    assert ab_check(result).passed is False


def test_no_gain_with_enough_data_keeps_the_champion() -> None:
    frame = log_frame(np.random.default_rng(23), 3000, {"champion": 3.0, "challenger": 3.0})

    result = analyse_ab(frame, FAST, top_k=100)

    assert result.recommendation == "keep", result.reason
    assert not result.comparison("recall").significant
    assert "no significant gain" in result.reason


def test_an_inconclusive_test_before_its_planned_sample_needs_more_data() -> None:
    frame = log_frame(np.random.default_rng(24), 3000, {"champion": 3.0, "challenger": 3.2})
    params = FAST.model_copy(update={"min_detectable_lift": 0.02})

    result = analyse_ab(frame, params, top_k=100)

    assert result.recommendation == "need_more_data"
    assert str(result.required_per_arm) in result.reason
    assert live_evidence_allows_promotion(result) is None
    assert ab_check(result) is None


@pytest.mark.parametrize("rows", [0, 5])
def test_empty_or_tiny_windows_need_more_data_without_failing(rows: int) -> None:
    frame = log_frame(np.random.default_rng(25), 100, {"champion": 3.0, "challenger": 3.0})

    result = analyse_ab(frame.head(rows), FAST, top_k=100)

    assert result.recommendation == "need_more_data"
    assert result.comparisons == []
    assert sum(arm.served for arm in result.arms) == rows


def test_a_missing_arm_needs_more_data_and_names_it() -> None:
    frame = log_frame(np.random.default_rng(26), 1000, {"champion": 3.0, "challenger": 3.0})

    result = analyse_ab(frame[frame["arm"] == "champion"], FAST, top_k=100)

    assert result.recommendation == "need_more_data"
    assert "'challenger' has 0 labelled" in result.reason


def test_unlabelled_rows_are_served_but_not_evidence_and_card_k_follows_traffic() -> None:
    frame = log_frame(
        np.random.default_rng(27),
        2000,
        {"champion": 3.0, "challenger": 3.0},
        weights=(0.75, 0.25),
        labelled_share=0.6,
    )

    result = analyse_ab(frame, FAST, top_k=100)

    champion, challenger = result.arms
    assert champion.served == (frame["arm"] == "champion").sum()
    assert champion.labelled == ((frame["arm"] == "champion") & frame["label"].notna()).sum()
    assert champion.labelled < 0.7 * champion.served
    assert champion.card_k == round(100 * champion.served / len(frame))
    assert champion.card_k + challenger.card_k == 100
    assert champion.card_k > 2 * challenger.card_k


def test_the_result_round_trips_through_json_and_is_reproducible() -> None:
    frame = log_frame(np.random.default_rng(28), 1500, {"champion": 2.0, "challenger": 3.0})

    result = analyse_ab(frame, FAST, top_k=100)

    assert ABResult.model_validate_json(result.model_dump_json()) == result
    assert analyse_ab(frame, FAST, top_k=100) == result
    interval = result.arms[0].metrics["average_precision"]
    assert interval.ci_low < interval.value < interval.ci_high


# --- the command, on a real SQLite prediction log ------------------------------------------


def test_report_ab_reads_the_log_and_writes_the_result(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FRAUDOPS_PREDICTION_LOG_URL", f"sqlite:///{tmp_path / 'log.db'}")
    params_path = tmp_path / "params.yaml"
    params_path.write_text(
        "ab: {min_sample: 200, min_frauds: 10, bootstrap_resamples: 200, "
        "min_detectable_lift: 0.5}\n"
    )
    monkeypatch.setenv("FRAUDOPS_PARAMS_PATH", str(params_path))
    get_settings.cache_clear()
    frame = log_frame(np.random.default_rng(29), 600, {"champion": 2.0, "challenger": 4.0})
    labels_arrive = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
    write_log(frame, labels_arrive)
    out = tmp_path / "ab.json"

    result = CliRunner().invoke(app, ["report", "ab", "--json", str(out)])

    assert result.exit_code == 0, result.output
    assert "challenger vs champion" in result.output
    written = ABResult.model_validate_json(out.read_text())
    assert [arm.served for arm in written.arms] == [
        (frame["arm"] == name).sum() for name in ("champion", "challenger")
    ]
    assert written.arms[0].frauds == frame.loc[frame["arm"] == "champion", "label"].sum()
    assert written.window.labels_received_by > labels_arrive
    # The log round trip loses nothing: the same numbers as the frame it was written from.
    assert written.model_copy(update={"window": None}) == analyse_ab(frame, FAST, top_k=100)
    assert written.comparisons and written.recommendation == "need_more_data"

    before_labels = labels_arrive - dt.timedelta(days=1)
    early = CliRunner().invoke(
        app, ["report", "ab", "--labels-by", f"{before_labels:%Y-%m-%d}", "--json", str(out)]
    )
    assert early.exit_code == 0, early.output
    assert json.loads(out.read_text())["recommendation"] == "need_more_data"


def write_log(frame: pd.DataFrame, labels_arrive: dt.datetime) -> None:
    engine = open_prediction_log(get_settings().log_url)
    logged_at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    with PredictionLogWriter(engine, id_salt="test", flush_interval_s=0.05) as writer:
        for number, row in enumerate(frame.itertuples(index=False)):
            writer.log_prediction(
                PredictionRecord(
                    request_id=f"r{number}",
                    transaction_id=number,
                    tx_datetime=row.tx_datetime.to_pydatetime(),
                    customer_id=row.customer_hash,
                    terminal_id=0,
                    features={"tx_amount": 10.0},
                    model_name="fraud-detector",
                    model_version=row.model_version,
                    model_alias=row.arm,
                    arm=row.arm,
                    score=row.score,
                    decision=row.decision,
                    threshold=0.5,
                    latency_ms=2.0,
                    logged_at=logged_at + dt.timedelta(seconds=number),
                )
            )
            if not pd.isna(row.label):
                writer.log_label(LabelRecord(number, int(row.label), labels_arrive))
    engine.dispose()
