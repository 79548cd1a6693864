"""The model-level exporter for real: MLflow server, training and monitoring flows, a scrape.

Each step of the loop is run for real and the exporter's HTTP endpoint is scraped after
it: the series must carry exactly the numbers the flows recorded (drift and the CBPE
estimate of the window, the estimate against the realised quality once labels land, a
retraining run, the champion moving), and an unreachable MLflow must read as
``fraudops_model_source_up 0``, not as a failed scrape.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from loop_support import log_labels, log_offline, simulated_days, use_project
from prometheus_client.parser import text_string_to_metric_families

from fraudops.config import Settings
from fraudops.logs.journal import next_day
from fraudops.tracking.registry import configure_mlflow, promote
from monitoring.exporter import start_exporter
from pipelines.monitoring_flow import REALISED_FILE, SIGNAL_TAG, monitoring_flow
from pipelines.retraining import TRIGGER_TAG
from pipelines.training import training_flow

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> tuple[set[str], Samples]:
    """The family names declared and every sample, keyed by name and sorted labels."""
    text = httpx.get(url, timeout=30).raise_for_status().text
    families, samples = set(), {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (sample, labels), v in samples.items() if sample == name}


@pytest.fixture
def project_settings(
    project: Path, mlflow_settings: Settings, prefect_api: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The small project, on the real MLflow server, in an experiment of this test's own."""
    return use_project(monkeypatch, project, experiment_name=f"exporter-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def exporter(project_settings: Settings) -> Iterator[str]:
    server = start_exporter(project_settings, 0, "127.0.0.1")
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()


def test_the_series_follow_the_loop_step_by_step(project_settings: Settings, exporter: str):
    settings = project_settings
    families, samples = scrape(exporter)
    assert value(samples, "fraudops_model_source_up") == 1
    assert {
        "fraudops_model_drifted_share",
        "fraudops_model_score_drift",
        "fraudops_model_estimated_quality",
        "fraudops_model_settled_quality",
        "fraudops_model_retrainings",
        "fraudops_model_champion_version",
    } <= families
    assert named(samples, "fraudops_model_champion_version") == {}  # nothing trained yet

    training_flow()
    _, samples = scrape(exporter)
    assert value(samples, "fraudops_model_champion_version") == 1
    assert value(samples, "fraudops_model_alias_info", alias="challenger", version="1") == 1
    assert named(samples, "fraudops_model_retrainings_total") == {}  # a first training

    # Two weeks of shifted amounts, no label yet: drift, and an estimate before labels.
    first_day = next_day(settings.raw_dir)
    days = simulated_days(first_day, 14, "amount_shift")
    log_offline(settings, days, labelled=False)
    window = monitoring_flow(
        since=dt.datetime.combine(first_day, dt.time()), by_transaction_time=True, on_drift="none"
    )
    decision = window.decision
    assert decision.signal == "data_drift" and decision.data_drift is not None
    assert decision.estimate is not None, decision.notes
    _, samples = scrape(exporter)
    assert value(samples, "fraudops_model_drifted_share") == pytest.approx(
        decision.data_drift.drifted_share
    )
    assert value(samples, "fraudops_model_score_drift") == pytest.approx(
        decision.data_drift.score.score
    )
    estimated = named(samples, "fraudops_model_estimated_quality")
    assert estimated == pytest.approx(
        {(("metric", m),): v for m, v in decision.estimate.values.items()}
    )
    assert value(samples, "fraudops_model_monitoring_runs_total", signal="data_drift") == 1
    assert named(samples, "fraudops_model_settled_quality") == {}

    # The labels land; the next run settles the first window's estimate.
    log_labels(settings, days)
    later = monitoring_flow(
        since=dt.datetime(2030, 1, 1), by_transaction_time=True, on_drift="none"
    )
    assert later.decision.signal == "insufficient_data"
    checks = json.loads((window.report_dir / REALISED_FILE).read_text())
    _, samples = scrape(exporter)
    settled = named(samples, "fraudops_model_settled_quality")
    assert settled == pytest.approx(
        {(("metric", c["metric"]), ("source", "cbpe")): c["estimated"] for c in checks}
        | {(("metric", c["metric"]), ("source", "labels")): c["realised"] for c in checks}
    )
    assert value(samples, "fraudops_model_settled_window_timestamp_seconds") == pytest.approx(
        decision.timestamp.replace(tzinfo=dt.UTC).timestamp()
    )
    assert value(samples, "fraudops_model_monitoring_runs_total", signal="insufficient_data") == 1
    # The newest window had too few rows to test: the drift shown is still the first one's.
    assert value(samples, "fraudops_model_drifted_share") == pytest.approx(
        decision.data_drift.drifted_share
    )

    # A retraining (a training run tagged with its trigger), then a promotion.
    retrained = training_flow(tags={TRIGGER_TAG: "event", SIGNAL_TAG: "data_drift"})
    _, samples = scrape(exporter)
    assert named(samples, "fraudops_model_retrainings_total") == {
        (("signal", "data_drift"), ("trigger", "event")): 1
    }
    assert value(samples, "fraudops_model_last_retraining_timestamp_seconds") is not None
    assert value(samples, "fraudops_model_champion_version") == 1
    assert value(samples, "fraudops_model_alias_info", alias="challenger", version="2") == 1

    promote(configure_mlflow(settings), settings.model_name, retrained.version, "test")
    _, samples = scrape(exporter)
    assert value(samples, "fraudops_model_champion_version") == 2
    assert value(samples, "fraudops_model_alias_info", alias="champion", version="2") == 1


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_mlflow_reads_as_source_down_not_a_failed_scrape(tmp_path: Path):
    settings = Settings(home=tmp_path, mlflow_tracking_uri=f"http://127.0.0.1:{_closed_port()}")
    server = start_exporter(settings, 0, "127.0.0.1")
    try:
        families, samples = scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
    assert families == {"fraudops_model_source_up"}
    assert value(samples, "fraudops_model_source_up") == 0


def test_serve_flows_starts_the_exporter_and_names_a_port_it_cannot_take(tmp_path: Path):
    """``fraudops serve-flows`` opens the port of FRAUDOPS_FLOWS_METRICS_PORT before it
    serves anything: one already taken ends it at once with the address in the message."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "FRAUDOPS_HOME": str(tmp_path / "home"),
            "FRAUDOPS_PREFECT_API_URL": f"http://127.0.0.1:{_closed_port()}/api",
            "FRAUDOPS_FLOWS_METRICS_PORT": str(port),
        }
        done = subprocess.run(
            [str(Path(sys.executable).with_name("fraudops")), "serve-flows"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1
    assert f"model metrics cannot listen on 127.0.0.1:{port}" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
