"""``docker compose up`` for real: the whole stack built, started and used (``-m compose``).

A Docker engine of the test's own (Debian's docker.io) builds the project image on a local
Debian base, with PostgreSQL, Redis and Prometheus stood in for by Debian's packages
(``override.yml``); Grafana is left out. Every request goes to a port the stack publishes
on 127.0.0.1. On failure the unhealthy services' logs are printed; in every case the stack
is removed with its volumes and the engine stopped.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from compose_support import BASE_IMAGE, Engine, Stack, install_tools, missing_tools

pytestmark = [pytest.mark.compose, pytest.mark.timeout(2400)]

PORTS = ("API", "MLFLOW", "PREFECT", "EVIDENTLY", "PROMETHEUS", "GRAFANA")
UP_TIMEOUT_S = 1500


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Stack, dict[str, str]]]:
    if missing_tools():
        if os.geteuid() != 0:
            pytest.skip(f"needs root to install {', '.join(missing_tools())}")
        install_tools()
    urls = {name: f"http://127.0.0.1:{_free_port()}" for name in PORTS}
    variables = {f"{name}_PORT": url.rsplit(":", 1)[1] for name, url in urls.items()}
    variables |= {
        "BASE_IMAGE": BASE_IMAGE,
        "FRAUDOPS_IMAGE": "localhost/fraudops:test",
        "BOOTSTRAP_GENERATE_ARGS": "--days 120",
        "TRAFFIC_RATE": "20",
        "TRAFFIC_SECONDS_PER_DAY": "20",
    }
    with Engine() as engine:
        engine.ensure_base_image()
        compose = Stack(engine, "fraudops-test", variables)
        compose.run("down", "--volumes", "--remove-orphans", "--timeout", "5")
        try:
            started = time.monotonic()
            up = compose.run(
                "up",
                "--detach",
                "--build",
                "--wait",
                "--wait-timeout",
                str(UP_TIMEOUT_S),
                check=False,
            )
            print(f"compose up --build --wait: {time.monotonic() - started:.0f} s")
            if up.returncode != 0:
                pytest.fail(
                    f"the stack did not become healthy:\n{up.stderr[-3000:]}\n"
                    f"{compose.unhealthy_logs()}"
                )
            yield compose, urls
        finally:
            compose.run("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)


def test_the_api_scores_a_transaction_with_the_champion(stack) -> None:
    _, urls = stack
    transaction = {
        "transaction_id": 9_000_000_001,
        "timestamp": dt.datetime(2018, 8, 5, 12, 0, tzinfo=dt.UTC).isoformat(),
        "customer_id": 42,
        "terminal_id": 4242,
        "amount": 57.16,
    }
    response = httpx.post(f"{urls['API']}/v1/score", json=transaction, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["score"] <= 1.0
    assert body["model"]["alias"] == "champion"


def test_mlflow_serves_the_champion_alias(stack) -> None:
    _, urls = stack
    response = httpx.get(
        f"{urls['MLFLOW']}/api/2.0/mlflow/registered-models/alias",
        params={"name": "fraud-detector", "alias": "champion"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert "champion" in response.json()["model_version"]["aliases"]


def test_prefect_holds_the_deployments_and_the_drift_automation(stack) -> None:
    _, urls = stack
    api = f"{urls['PREFECT']}/api"
    deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=30).json()
    assert {"scheduled", "on-drift"} <= {d["name"] for d in deployments}
    automations = httpx.post(f"{api}/automations/filter", json={}, timeout=30).json()
    expected = [
        a for a in automations if "fraudops.drift.detected" in str(a["trigger"].get("expect"))
    ]
    assert expected, automations


def test_the_evidently_ui_shows_the_monitoring_project(stack) -> None:
    _, urls = stack
    projects = httpx.get(f"{urls['EVIDENTLY']}/api/projects", timeout=30).json()
    assert "fraudops monitoring" in {p["name"] for p in projects}


def test_prometheus_scrapes_the_api(stack) -> None:
    _, urls = stack
    deadline = time.monotonic() + 90
    targets: list[dict] = []
    while time.monotonic() < deadline:
        response = httpx.get(f"{urls['PROMETHEUS']}/api/v1/targets", timeout=30)
        targets = response.json()["data"]["activeTargets"]
        if any("api:8000" in t["scrapeUrl"] and t["health"] == "up" for t in targets):
            return
        time.sleep(3)
    pytest.fail(f"no healthy api:8000 target: {[(t['scrapeUrl'], t['health']) for t in targets]}")
