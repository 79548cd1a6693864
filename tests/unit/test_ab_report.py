"""The A/B report on prediction-log frames with known model quality, and its command.

The statistics under it are checked in ``test_ab_statistics``; here, that the verdict
follows the evidence and the sample plan, and that the report survives a real log.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import polars as pl
import pytest
from typer.testing import CliRunner

from fraudops.cli import app
from fraudops.config import ABParams, Params, SimulateParams, get_settings
from fraudops.data.schema import CUSTOMER_ID, TRANSACTION_ID, TX_DATETIME, TX_FRAUD
from fraudops.data.simulate import simulate
from fraudops.experiments.ab_report import (
    ABResult,
    ab_check,
    analyse_ab,
    live_evidence_allows_promotion,
)
from fraudops.experiments.ab_segments import compare_segments
from fraudops.fairness.segments import REGION, customer_regions
from fraudops.fairness.window_segments import RawHistory, SegmentSource
from fraudops.logs.database import open_prediction_log
from fraudops.logs.records import LabelRecord, PredictionRecord
from fraudops.logs.writer import PredictionLogWriter

# --- the report on prediction-log frames ---------------------------------------------------


def test_the_arms_segment_gaps_say_which_arm_widens_one():
    """Arms on one simulated history: the treatment alerts on every payment of the first
    region's customers (a false-positive gap), the control decides by the label."""
    raw = simulate(SimulateParams(customers=400, terminals=800, days=60, seed=3))
    params = Params(simulate=SimulateParams(customers=400, terminals=800, seed=3))
    regions = customer_regions(params.simulate, params.fairness.region_grid)
    rows = raw.filter(pl.col(TX_DATETIME) >= dt.datetime(2018, 5, 1)).join(regions, on=CUSTOMER_ID)
    arm = np.where(rows[CUSTOMER_ID].to_numpy() % 2 == 0, "champion", "challenger")
    label = rows[TX_FRAUD].to_numpy().astype(bool)
    frame = pd.DataFrame(
        {
            "arm": arm,
            TRANSACTION_ID: rows[TRANSACTION_ID].to_numpy(),
            "decision": label | ((arm == "challenger") & (rows[REGION] == "x0y0").to_numpy()),
            "label": pd.array(label.astype(int), dtype="Int8"),
        }
    )
    source = SegmentSource(RawHistory(raw), params)

    comparison, note = compare_segments(frame, FAST, source)

    assert note is None and comparison is not None
    assert comparison.treatment_widens, comparison.detail
    region = {gap.gap: gap for gap in comparison.gaps if gap.segment == REGION}
    assert region["equalized_odds_difference"].treatment_flagged
    assert not region["equalized_odds_difference"].control_flagged
    missing = compare_segments(frame, FAST, SegmentSource(RawHistory(None, "gone"), params))
    assert missing == (None, "segments of arm 'champion' not reported: gone")


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
    # No raw data, whatever the checkout holds: `fraudops generate` at its root writes data/.
    monkeypatch.setenv("FRAUDOPS_DATA_DIR", str(tmp_path / "data"))
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
    # Without raw data or a journal the segments are not reported, and the output says why.
    assert written.segments is None and "no raw data" in (written.segments_note or "")
    assert "SEGMENTS: segments of arm" in " ".join(result.output.split())
    # The log round trip loses nothing: the same numbers as the frame it was written from.
    unsegmented = {"window": None, "segments_note": None}
    assert written.model_copy(update=unsegmented) == analyse_ab(frame, FAST, top_k=100)
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
