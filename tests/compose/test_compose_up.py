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
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from compose_support import (
    BASE_IMAGE,
    REPO,
    Engine,
    Stack,
    install_tools,
    missing_tools,
)

pytestmark = [pytest.mark.compose, pytest.mark.timeout(2400)]

PORTS = ("API", "MLFLOW", "PREFECT", "EVIDENTLY", "PROMETHEUS", "GRAFANA")
UP_TIMEOUT_S = 1500


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _small_params(path: Path) -> Path:
    """The project's params.yaml at test scale: fewer days, one small XGBoost, one fold."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["simulate"]["days"] = 75
    params["train"]["validation_folds"] = 1
    params["train"]["candidates"] = {
        "xgboost": {
            "fixed": {"n_estimators": 50, "learning_rate": 0.2, "positive_weight": 1},
            "grid": {"max_depth": [3]},
        }
    }
    path.write_text(yaml.safe_dump(params))
    path.chmod(0o644)
    return path


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
        "TRAFFIC_RATE": "20",
        "TRAFFIC_SECONDS_PER_DAY": "20",
    }
    with Engine() as engine:
        engine.ensure_base_image()
        variables["FRAUDOPS_TEST_PARAMS"] = str(_small_params(engine.workdir / "params.yaml"))
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
            # Each rebuild leaves the previous 3 GB image untagged in the cached data root,
            # and build cache that no build has used for a day is not worth its space.
            engine.docker("image", "prune", "--force", check=False)
            engine.docker("builder", "prune", "--force", "--filter", "until=24h", check=False)


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


def test_prometheus_scrapes_the_api_and_the_flows_exporter(stack) -> None:
    _, urls = stack
    wanted = {"api:8000", "flows:9108"}
    deadline = time.monotonic() + 90
    up: set[str] = set()
    targets: list[dict] = []
    while time.monotonic() < deadline:
        response = httpx.get(f"{urls['PROMETHEUS']}/api/v1/targets", timeout=30)
        targets = response.json()["data"]["activeTargets"]
        up = {t["labels"]["instance"] for t in targets if t["health"] == "up"}
        if wanted <= up:
            return
        time.sleep(3)
    seen = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in targets]
    pytest.fail(f"not all of {sorted(wanted)} up: {seen}")


def test_a_second_bootstrap_skips_what_exists(stack) -> None:
    compose, _ = stack
    done = compose.run("run", "--rm", "--no-deps", "bootstrap")
    output = done.stdout + done.stderr
    for step in ("generate skipped", "train skipped", "backfill skipped"):
        assert step in output, output[-3000:]


# --- faults on the running stack -----------------------------------------------------------

_next_id = iter(range(9_100_000_000, 9_200_000_000))


def _transaction() -> dict:
    transaction_id = next(_next_id)
    return {
        "transaction_id": transaction_id,
        "timestamp": dt.datetime(2018, 8, 5, 12, 0, tzinfo=dt.UTC).isoformat(),
        "customer_id": transaction_id % 4000,
        "terminal_id": transaction_id % 9000,
        "amount": 20.0,
    }


def _score_until(stop: threading.Event, api: str, scored: list[str], refused: list[str]) -> None:
    """Post transactions one after another until STOP; request ids of those answered 200."""
    with httpx.Client(base_url=api, timeout=10) as client:
        while not stop.is_set():
            try:
                response = client.post("/v1/score", json=_transaction())
            except httpx.HTTPError as error:
                refused.append(type(error).__name__)
                time.sleep(0.2)
                continue
            if response.status_code == 200:
                scored.append(response.json()["request_id"])
            else:
                refused.append(str(response.status_code))
                time.sleep(0.2)


def _wait_ready(api: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"{api}/ready did not answer 200 within {timeout_s:.0f} s")


def _logged_request_ids(compose: Stack) -> set[str] | None:
    """Request ids in the prediction log, read inside the postgres container; None while
    PostgreSQL does not answer (it may be starting up again)."""
    query = "SELECT request_id FROM predictions WHERE NOT is_shadow"
    done = compose.run(
        "exec",
        "-T",
        "postgres",
        "psql",
        "-U",
        "fraudops",
        "-d",
        "fraudops",
        "-tAc",
        query,
        check=False,
    )
    return set(done.stdout.split()) if done.returncode == 0 else None


def _eventually_logged(compose: Stack, wanted: set[str], timeout_s: float = 60) -> set[str]:
    """The ids of WANTED still missing from the log after TIMEOUT_S (the writer batches)."""
    deadline = time.monotonic() + timeout_s
    missing = wanted
    while missing and time.monotonic() < deadline:
        logged = _logged_request_ids(compose)
        if logged is not None:
            missing = wanted - logged
        time.sleep(1)
    return missing


def test_stopping_and_starting_the_api_mid_traffic_loses_no_logged_prediction(stack) -> None:
    compose, urls = stack
    stop, scored, refused = threading.Event(), [], []
    client = threading.Thread(target=_score_until, args=(stop, urls["API"], scored, refused))
    client.start()
    try:
        time.sleep(5)
        before_stop = len(scored)
        compose.run("stop", "--timeout", "35", "api")
        compose.run("start", "api")
        _wait_ready(urls["API"])
        time.sleep(5)
    finally:
        stop.set()
        client.join()
    assert before_stop > 0 and len(scored) > before_stop  # traffic on both sides of the stop
    assert refused  # the API really was away for a while
    assert _eventually_logged(compose, set(scored)) == set()


@pytest.mark.parametrize("service", ["postgres", "redis"])
def test_restarting_a_store_heals_without_manual_steps(stack, service: str) -> None:
    compose, urls = stack
    compose.run("restart", "--timeout", "10", service)
    deadline = time.monotonic() + 180
    response = None
    while time.monotonic() < deadline:
        try:
            response = httpx.post(f"{urls['API']}/v1/score", json=_transaction(), timeout=10)
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 200:
            break
        time.sleep(2)
    assert response is not None and response.status_code == 200, response
    assert _eventually_logged(compose, {response.json()["request_id"]}) == set()
    _wait_ready(urls["API"], timeout_s=60)
