"""The shadow report on hand-made pairs whose every number is known, and through the CLI."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr
from typer.testing import CliRunner

from fraudops.cli import app
from fraudops.config import ABParams, TrainParams, get_settings
from fraudops.experiments.shadow_report import ShadowReport, analyse_shadow, shadow_check
from fraudops.logs.database import open_prediction_log
from fraudops.logs.records import LabelRecord, PredictionRecord
from fraudops.logs.writer import PredictionLogWriter

SMALL = ABParams(min_sample=5, min_frauds=2)
COSTS = TrainParams(cost_missed_fraud=100.0, cost_false_alarm=5.0)

# (served alerts, shadow alerts, label) per request; None: the label has not arrived.
CASES = [
    (1, 1, 1),  # agree
    (1, 0, 1),  # shadow would miss a fraud: served right
    (1, 0, 0),  # shadow would drop a false alarm: shadow right
    (0, 1, 1),  # shadow would catch a fraud: shadow right
    (0, 1, 0),  # shadow would add a false alarm: served right
    (0, 1, None),  # a flip whose label is not known yet
    (0, 0, 0),  # agree
    (0, 0, None),  # agree
    (1, 0, 1),  # shadow would miss another fraud: served right
]


def row(number: int, alert: int, label: int | None, *, shadow: bool, version: str) -> dict:
    score = (number + 1) / 10
    return {
        "request_id": f"r{number}",
        "transaction_id": number,
        "customer_hash": f"c{number % 3}",
        "model_name": "fraud-detector",
        "model_version": version,
        "model_alias": "challenger" if shadow else "champion",
        "arm": "champion",
        "is_shadow": shadow,
        "score": 2 * score if shadow else score,
        "decision": bool(alert),
        "latency_ms": float(10 * (number + 1) if shadow else number + 1),
        "label": label,
        "tx_datetime": pd.Timestamp("2026-01-01") + pd.Timedelta(minutes=number),
    }


def pairs_frame(
    cases: list[tuple[int, int, int | None]], shadow_version: str = "2"
) -> pd.DataFrame:
    rows = []
    for number, (served, shadow, label) in enumerate(cases):
        rows.append(row(number, served, label, shadow=False, version="1"))
        rows.append(row(number, shadow, label, shadow=True, version=shadow_version))
    frame = pd.DataFrame(rows)
    frame["label"] = frame["label"].astype("Int8")
    return frame


def test_agreement_flips_and_the_side_that_was_right_are_counted_exactly() -> None:
    report = analyse_shadow(pairs_frame(CASES), SMALL, COSTS)

    assert (report.pairs, report.served) == (9, 9)
    assert report.agreement == pytest.approx(3 / 9)
    assert report.agreement_ci_low < 3 / 9 < report.agreement_ci_high
    assert report.alert_to_clear.model_dump() == {
        "total": 3,
        "fraud": 2,
        "genuine": 1,
        "unlabelled": 0,
    }
    assert report.clear_to_alert.model_dump() == {
        "total": 3,
        "fraud": 1,
        "genuine": 1,
        "unlabelled": 1,
    }
    assert (report.served_right, report.shadow_right) == (3, 2)
    assert (report.labelled, report.labelled_frauds) == (7, 4)
    assert report.fraud_flip_p_value == pytest.approx(1.0)  # 2 vs 1 discordant frauds
    assert report.served_models == {"fraud-detector v1 (champion)": 9}
    assert report.shadow_model == "fraud-detector v2 (challenger)"


def test_each_side_is_scored_on_the_labelled_pairs_with_the_training_cost_model() -> None:
    report = analyse_shadow(pairs_frame(CASES), SMALL, COSTS)
    served, shadow = report.sides["served"], report.sides["shadow"]

    # Labelled: served catches 3 of 4 frauds with 1 false alarm; the shadow 2 with 1.
    assert (served.precision, served.recall) == (pytest.approx(3 / 4), pytest.approx(3 / 4))
    assert (shadow.precision, shadow.recall) == (pytest.approx(2 / 3), pytest.approx(2 / 4))
    assert served.expected_cost == pytest.approx((1 * 100 + 1 * 5) / 7)
    assert shadow.expected_cost == pytest.approx((2 * 100 + 1 * 5) / 7)
    assert report.cost_saving_per_1000 == pytest.approx(1000 * (105 - 205) / 7)
    assert served.alert_rate == pytest.approx(4 / 9)
    assert shadow.alert_rate == pytest.approx(4 / 9)


def test_latency_percentiles_are_reported_per_model() -> None:
    report = analyse_shadow(pairs_frame(CASES), SMALL, COSTS)

    # Latencies 1..9 ms served and 10..90 ms shadow: p95 interpolates to 8.6 and 86.
    assert report.sides["served"].latency_p50_ms == 5.0
    assert report.sides["served"].latency_p95_ms == pytest.approx(8.6)
    assert report.sides["shadow"].latency_p50_ms == 50.0
    assert report.sides["shadow"].latency_p95_ms == pytest.approx(86.0)


@pytest.mark.parametrize(
    ("transform", "pearson", "spearman"),
    [
        (lambda s: 2 * s + 1, 1.0, 1.0),
        (lambda s: 1 - s, -1.0, -1.0),
        (lambda s: s**4, None, 1.0),  # monotone, not linear: Pearson below 1
    ],
)
def test_score_correlations(transform, pearson: float | None, spearman: float) -> None:
    frame = pairs_frame(CASES)
    shadow = frame["is_shadow"]
    frame.loc[shadow, "score"] = transform(frame.loc[~shadow, "score"].to_numpy())
    expected_pearson = pearson or pearsonr(np.arange(1, 10) / 10, (np.arange(1, 10) / 10) ** 4)[0]

    report = analyse_shadow(frame, SMALL, COSTS)

    assert report.pearson == pytest.approx(expected_pearson)
    assert report.spearman == pytest.approx(spearman)
    assert report.pearson < 1 or pearson == 1.0


def test_a_shadow_whose_scores_never_vary_has_no_correlation() -> None:
    frame = pairs_frame(CASES)
    frame.loc[frame["is_shadow"], "score"] = 0.5

    report = analyse_shadow(frame, SMALL, COSTS)

    assert report.pearson is None and report.spearman is None
    assert report.pairs == 9


def test_the_newest_shadow_version_is_judged_unless_one_is_named() -> None:
    older, newer = pairs_frame(CASES[:4], "2"), pairs_frame(CASES[4:], "3")
    newer["request_id"] = "n" + newer["request_id"]
    frame = pd.concat([older, newer], ignore_index=True)

    assert analyse_shadow(frame, SMALL, COSTS).pairs == 5
    named = analyse_shadow(frame, SMALL, COSTS, shadow_version="2")
    assert named.pairs == 4
    assert named.shadow_model == "fraud-detector v2 (challenger)"
    assert named.served == 9  # every served request counts, shadowed or not


def test_requests_without_a_shadow_are_served_but_not_paired() -> None:
    frame = pairs_frame(CASES)
    frame = frame[~(frame["is_shadow"] & frame["request_id"].isin(["r0", "r1"]))]

    report = analyse_shadow(frame, SMALL, COSTS)

    assert (report.served, report.pairs) == (9, 7)


@pytest.mark.parametrize("keep", ["nothing", "served only"])
def test_empty_windows_or_no_shadow_rows_need_more_data_without_failing(keep: str) -> None:
    frame = pairs_frame(CASES)
    frame = frame.iloc[:0] if keep == "nothing" else frame[~frame["is_shadow"]]

    report = analyse_shadow(frame, SMALL, COSTS)

    assert report.pairs == 0
    assert not report.enough_data and "needs" in report.reason
    assert report.agreement is None and report.pearson is None
    assert report.sides["served"].latency_p50_ms is None
    assert shadow_check(report) is None


def test_too_few_labels_give_no_verdict_but_still_agreement() -> None:
    report = analyse_shadow(pairs_frame(CASES), ABParams(min_sample=50, min_frauds=2), COSTS)

    assert not report.enough_data
    assert report.agreement == pytest.approx(3 / 9)
    assert shadow_check(report) is None


def test_the_gate_fails_a_shadow_that_misses_significantly_more_frauds() -> None:
    misses = pairs_frame([(1, 0, 1)] * 12 + [(0, 0, 0)] * 20)

    report = analyse_shadow(misses, SMALL, COSTS)
    check = shadow_check(report)

    assert report.fraud_flip_p_value == pytest.approx(2 * 0.5**12)
    assert check is not None and not check.passed
    assert check.numbers["shadow.frauds_only_served_caught"] == 12


def test_the_gate_passes_a_shadow_that_trades_misses_for_catches() -> None:
    balanced = pairs_frame([(1, 0, 1)] * 3 + [(0, 1, 1)] * 4 + [(0, 0, 0)] * 20)

    check = shadow_check(analyse_shadow(balanced, SMALL, COSTS))

    assert check is not None and check.passed
    assert check.numbers["shadow.frauds_only_shadow_caught"] == 4


def test_the_report_round_trips_through_json() -> None:
    report = analyse_shadow(pairs_frame(CASES), SMALL, COSTS)

    assert ShadowReport.model_validate_json(report.model_dump_json()) == report


# --- the command, on a real SQLite prediction log ------------------------------------------


@pytest.fixture
def shadow_log(tmp_path, monkeypatch) -> None:
    """CASES written as the server writes them: a served row, then its shadow copy."""
    monkeypatch.setenv("FRAUDOPS_PREDICTION_LOG_URL", f"sqlite:///{tmp_path / 'log.db'}")
    params_path = tmp_path / "params.yaml"
    params_path.write_text("ab: {min_sample: 5, min_frauds: 2}\n")
    monkeypatch.setenv("FRAUDOPS_PARAMS_PATH", str(params_path))
    get_settings.cache_clear()
    engine = open_prediction_log(get_settings().log_url)
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    with PredictionLogWriter(engine, id_salt="test", flush_interval_s=0.05) as writer:
        for number, (served_alert, shadow_alert, label) in enumerate(CASES):
            served = PredictionRecord(
                request_id=f"r{number}",
                transaction_id=number,
                tx_datetime=dt.datetime(2026, 3, 1) + dt.timedelta(minutes=number),
                customer_id=number % 3,
                terminal_id=7,
                features={"tx_amount": 10.0 + number},
                model_name="fraud-detector",
                model_version="1",
                model_alias="champion",
                arm="champion",
                score=(number + 1) / 10,
                decision=bool(served_alert),
                threshold=0.5,
                latency_ms=float(number + 1),
                logged_at=start + dt.timedelta(seconds=number),
            )
            writer.log_prediction(served)
            shadow = dataclasses.replace(
                served,
                model_version="2",
                model_alias="challenger",
                score=(number + 1) / 5,
                decision=bool(shadow_alert),
                latency_ms=float(10 * (number + 1)),
                is_shadow=True,
            )
            writer.log_prediction(shadow)
            if label is not None:
                writer.log_label(LabelRecord(number, label, start + dt.timedelta(days=7)))
    engine.dispose()


@pytest.mark.usefixtures("shadow_log")
def test_report_shadow_reads_the_log_and_writes_the_report(tmp_path) -> None:
    out = tmp_path / "shadow.json"

    result = CliRunner().invoke(app, ["report", "shadow", "--json", str(out)])

    assert result.exit_code == 0, result.output
    assert "decision agreement" in result.output
    report = ShadowReport.model_validate_json(out.read_text())
    expected = analyse_shadow(pairs_frame(CASES), SMALL, COSTS)
    assert (report.pairs, report.agreement) == (9, expected.agreement)
    assert report.alert_to_clear == expected.alert_to_clear
    assert report.clear_to_alert == expected.clear_to_alert
    assert report.pearson == pytest.approx(1.0)
    assert report.enough_data


@pytest.mark.usefixtures("shadow_log")
def test_report_shadow_over_the_last_requests_and_before_labels(tmp_path) -> None:
    out = tmp_path / "shadow.json"

    result = CliRunner().invoke(
        app, ["report", "shadow", "--last", "4", "--labels-by", "2026-03-02", "--json", str(out)]
    )

    assert result.exit_code == 0, result.output
    report = ShadowReport.model_validate_json(out.read_text())
    assert (report.served, report.pairs) == (4, 4)  # requests r5..r8 and their shadows
    assert report.clear_to_alert.total == 1 and report.alert_to_clear.total == 1
    assert report.labelled == 0 and not report.enough_data


@pytest.mark.usefixtures("shadow_log")
def test_report_shadow_windows_on_the_transactions_own_clock(tmp_path) -> None:
    out = tmp_path / "shadow.json"
    window = ["--by-transaction-time", "--since", "2026-03-01T00:05:00"]

    result = CliRunner().invoke(app, ["report", "shadow", *window, "--json", str(out)])

    assert result.exit_code == 0, result.output
    report = ShadowReport.model_validate_json(out.read_text())
    assert (report.served, report.pairs) == (4, 4)  # transactions at minutes 5..8
    assert report.window.time_column == "tx_datetime"
    assert report.labelled == 2  # r6 (genuine) and r8 (fraud); r5 and r7 have no label yet
