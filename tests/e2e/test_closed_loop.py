"""The whole loop at small scale, each stage checked as it happens:

traffic with drift (through the real API) → detection (monitoring flow) → retraining
(launched directly, the no-event launcher) → shadow (serving routes a copy to the new
challenger) → shadow report on the logged pairs → promotion with that evidence.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
from loop_support import (
    LABEL_DELAY_DAYS,
    backfill,
    current_data_version,
    in_remote,
    replay,
    use_project,
)

from fraudops.config import load_params
from fraudops.experiments.report_parts import ReportWindow
from fraudops.experiments.shadow_report import analyse_shadow, read_shadow_window, shadow_check
from fraudops.features.label_timing import LabelTiming
from fraudops.logs.database import open_prediction_log
from fraudops.logs.journal import next_day
from fraudops.logs.readers import read_predictions
from fraudops.tracking.registry import CHALLENGER, CHAMPION, configure_mlflow, version_by_alias
from pipelines.promotion import promotion_flow
from pipelines.training import training_flow
from serving.server import ServingProcess

pytestmark = pytest.mark.slow

DRIFT_DAYS = 8
SHADOW_DAYS = 8


def fraudops(*args: str) -> str:
    """The command as a user runs it, in the project, with this test's environment."""
    command = [str(Path(sys.executable).parent / "fraudops"), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def assert_labels_came_after_the_delay(settings, start: dt.datetime) -> None:
    """Each label arrived after every transaction before the moment it became usable was
    served, and before any transaction from that moment on: the label delay (to the hour,
    `LabelTiming`), in compressed time."""
    engine = open_prediction_log(settings.log_url)
    try:
        rows = read_predictions(engine, start=start, time_column="tx_datetime")
    finally:
        engine.dispose()
    rows = rows.sort_values("tx_datetime", ignore_index=True)
    timing = LabelTiming.after_days(LABEL_DELAY_DAYS)
    # The latest logged-at up to each position, and the earliest from it on.
    served_until = rows["logged_at"].cummax()
    served_from = rows["logged_at"][::-1].cummin()[::-1]
    labelled = rows.dropna(subset=["label_received_at"])
    usable = pd.to_datetime(labelled["tx_datetime"].map(timing.usable_from))
    first_after = rows["tx_datetime"].searchsorted(usable)  # first row served once usable
    checked_days = set()
    for received, position, tx_time in zip(
        labelled["label_received_at"], first_after, labelled["tx_datetime"], strict=True
    ):
        if position > 0:
            assert received > served_until.iloc[position - 1], tx_time
        if position < len(rows):
            assert received < served_from.iloc[position], tx_time
            checked_days.add(tx_time.normalize())
    assert len(checked_days) == DRIFT_DAYS - LABEL_DELAY_DAYS


def test_drift_is_detected_retrained_shadowed_reported_and_promoted(
    tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str
):
    serving = ServingProcess(tmp_path / "logs")
    settings = use_project(monkeypatch, project, serving_url=serving.url, retrain_cooldown_s="0")
    first = training_flow()
    client = configure_mlflow(settings)
    first_data = current_data_version(project)
    drift_start = dt.datetime.combine(next_day(settings.raw_dir), dt.time())
    backfill(settings)

    with serving:
        # 1. traffic with drift
        sent, stats = replay(settings, serving.url, DRIFT_DAYS, "amount_shift")
        assert stats.scored == sent.height and stats.labels_posted == sent.height, stats.errors

        assert_labels_came_after_the_delay(settings, drift_start)

        # 2. detection, 3. retraining (direct launcher), 4. shadow: from the command line
        since = f"--since={drift_start:%Y-%m-%d}"
        printed = fraudops("monitor", since, "--by-transaction-time", "--on-drift=direct")
        assert ": data_drift" in printed
        assert "retraining requested: direct: retrained" in printed
        monitoring_run = re.search(r"MLflow run ([0-9a-f]{32})", printed).group(1)
        challenger = version_by_alias(client, settings.model_name, CHALLENGER)
        assert str(challenger.version) != first.version
        assert challenger.tags["fraudops.monitoring_run"] == monitoring_run
        assert challenger.tags["fraudops.trigger"] == "direct"
        new_data = current_data_version(project)
        assert new_data != first_data and in_remote(project, new_data)
        view = httpx.get(f"{serving.url}/v1/models").json()
        assert view["routing"]["active"]["shadow"]["alias"] == CHALLENGER

        # 5. the shadow report on traffic served after the switch
        sent, stats = replay(settings, serving.url, SHADOW_DAYS, "amount_shift")
        assert stats.scored == sent.height, stats.errors

    window = ReportWindow(
        start=drift_start + dt.timedelta(days=DRIFT_DAYS),
        time_column="tx_datetime",
        labels_received_by=dt.datetime.now(dt.UTC),
    )
    engine = open_prediction_log(settings.log_url)
    try:
        frame = read_shadow_window(engine, window)
    finally:
        engine.dispose()
    params = load_params()
    report = analyse_shadow(frame, params.ab, params.train, window=window)
    assert report.shadow_model == f"{settings.model_name} v{challenger.version} ({CHALLENGER})"
    assert report.pairs == sent.height
    assert report.labelled == sent.height
    assert report.agreement is not None and 0 <= report.agreement <= 1

    # 6. promotion, judged on the holdout and the shadow evidence
    check = shadow_check(report)
    promoted = promotion_flow(evidence=[check] if check is not None else None)
    assert promoted.challenger == str(challenger.version)
    assert promoted.outcome == "promoted", promoted.reason
    champion = version_by_alias(client, settings.model_name, CHAMPION)
    assert str(champion.version) == str(challenger.version)
