"""``docker compose up`` for real: the whole stack built, started and used (``-m compose``).

A Docker engine of the test's own (Debian's docker.io) builds the project image on a local
Debian base, with PostgreSQL, Redis and Prometheus stood in for by Debian's packages
(``override.yml``); Grafana is left out. Every request goes to a port the stack publishes
on 127.0.0.1. On failure the unhealthy services' logs are printed; in every case the stack
is removed with its volumes and the engine stopped.

The stack is left to run on its own and must tell the drift story to a decision: traffic
turns to ``amount_shift``, monitoring sees it, retraining trains a challenger, the
experiment flow takes it through shadow and A/B to the promotion gate, and the decision
lands on its MLflow version. Time is compressed by the compose file's own variables and a
test-scale params.yaml (a tenth of the customers, a two-day label delay, small floors).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from compose_support import (
    BASE_IMAGE,
    Engine,
    Stack,
    free_port,
    install_tools,
    missing_tools,
    small_params,
)

pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600)]

PORTS = ("API", "MLFLOW", "PREFECT", "EVIDENTLY", "PROMETHEUS", "GRAFANA")
UP_TIMEOUT_S = 1500
STORY_TIMEOUT_S = 2400
MODEL = "fraud-detector"
#: The story in compressed time: about 1,000 transactions a simulated day, 8 s each at
#: least; drift from replay day 1; monitoring every two minutes on about three days (a run
#: takes one to three minutes on a busy machine: runs should not pile up); the experiment
#: advanced every 30 s; one retraining in the test (the cool-down outlasts it).
STORY = {
    "TRAFFIC_SCHEDULE": "none:0,amount_shift:1",
    "TRAFFIC_DAYS": "14",
    "TRAFFIC_RATE": "400",
    "TRAFFIC_SECONDS_PER_DAY": "8",
    "MONITOR_INTERVAL_S": "120",
    "MONITOR_WINDOW": "3000",
    "EXPERIMENT_INTERVAL_S": "30",
    "RETRAIN_COOLDOWN_S": "3600",
}
#: Seconds from `up` until the API answered /ready and until the first decision.
TIMINGS: dict[str, float] = {}


def _story_params(path: Path) -> Path:
    """The small params with a tenth of the customers over 45 days (a month of history for
    the longest feature window, then the split's weeks), a two-day label delay, floors that
    a few simulated days of this traffic can meet, and fewer bootstrap resamples."""
    params = yaml.safe_load(small_params(path).read_text())
    params["simulate"].update(customers=500, terminals=1000, days=45)
    params["features"]["label_delay_days"] = 2
    params["train"]["delay_days"] = 2
    params["monitor"].update(
        sample_size=5000,
        min_rows=300,
        min_labelled_rows=300,
        min_labelled_frauds=5,
        min_reference_frauds=5,
    )
    # The fewest resamples the params allow: the intervals matter less here than the CPU.
    params["ab"].update(min_sample=200, min_frauds=5, bootstrap_resamples=100)
    params["fairness"]["bootstrap_resamples"] = 50
    params["experiment"] = {
        "shadow_min_scored": 300,
        "ab_share": 50,
        "ab_min_days": 2,
        "ab_max_days": 4,
    }
    path.write_text(yaml.safe_dump(params))
    return path


def _time_until_ready(api: str, started: float, stop: threading.Event) -> None:
    """Record in TIMINGS when API first answers /ready with 200, counted from STARTED."""
    while not stop.is_set():
        try:
            if httpx.get(f"{api}/ready", timeout=2).status_code == 200:
                TIMINGS["api_ready_s"] = time.monotonic() - started
                return
        except httpx.HTTPError:
            pass
        stop.wait(1)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[Stack, dict[str, str]]]:
    if missing_tools():
        if os.geteuid() != 0:
            pytest.skip(f"needs root to install {', '.join(missing_tools())}")
        install_tools()
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in PORTS}
    variables = {f"{name}_PORT": url.rsplit(":", 1)[1] for name, url in urls.items()}
    variables |= {"BASE_IMAGE": BASE_IMAGE, "FRAUDOPS_IMAGE": "localhost/fraudops:test"}
    variables |= STORY
    with Engine() as engine:
        engine.ensure_base_image()
        variables["FRAUDOPS_TEST_PARAMS"] = str(_story_params(engine.workdir / "params.yaml"))
        compose = Stack(engine, "fraudops-test", variables)
        compose.run("down", "--volumes", "--remove-orphans", "--timeout", "5")
        stop = threading.Event()
        try:
            built = time.monotonic()
            compose.run("build")
            print(f"\ncompose build: {time.monotonic() - built:.0f} s")
            started = time.monotonic()
            TIMINGS["up_started"] = started
            watcher = threading.Thread(target=_time_until_ready, args=(urls["API"], started, stop))
            watcher.start()
            up = compose.run(
                "up", "--detach", "--wait", "--wait-timeout", str(UP_TIMEOUT_S), check=False
            )
            print(f"compose up --wait (images built): {time.monotonic() - started:.0f} s")
            stop.set()
            watcher.join()
            if "api_ready_s" in TIMINGS:
                print(f"API ready after {TIMINGS['api_ready_s']:.0f} s")
            if up.returncode != 0:
                pytest.fail(
                    f"the stack did not become healthy:\n{up.stderr[-3000:]}\n"
                    f"{compose.unhealthy_logs()}"
                )
            yield compose, urls
        finally:
            stop.set()
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


# --- the story, told by the stack on its own ------------------------------------------------


def _versions(mlflow: str) -> list[dict[str, Any]]:
    """Every version of the model, its tags as a dict."""
    response = httpx.get(
        f"{mlflow}/api/2.0/mlflow/model-versions/search",
        params={"filter": f"name='{MODEL}'", "max_results": 100},
        timeout=30,
    )
    versions = response.raise_for_status().json().get("model_versions", [])
    return [v | {"tags": {t["key"]: t["value"] for t in v.get("tags", [])}} for v in versions]


def _decided(mlflow: str) -> dict[str, Any] | None:
    """The first version the experiment flow decided on, once its decision is recorded."""
    for version in _versions(mlflow):
        tags = version["tags"]
        if "fraudops.decision" in tags and "fraudops.experiment.decided_because" in tags:
            return version
    return None


def _prefect(prefect: str, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{prefect}/api/{path}", json=body, timeout=30)
    return response.raise_for_status().json()


def _psql(compose: Stack, query: str) -> str:
    done = compose.run(
        "exec", "-T", "postgres", "psql", "-U", "fraudops", "-d", "fraudops", "-tAc", query
    )
    return done.stdout.strip()


def test_the_stack_tells_the_drift_story_to_a_promotion_decision(stack) -> None:
    compose, urls = stack
    deadline = time.monotonic() + STORY_TIMEOUT_S
    decided = _decided(urls["MLFLOW"])
    while decided is None and time.monotonic() < deadline:
        time.sleep(10)
        decided = _decided(urls["MLFLOW"])
    if decided is None:
        logs = compose.run("logs", "--no-color", "--tail", "60", "flows", "traffic", check=False)
        pytest.fail(f"no decision within {STORY_TIMEOUT_S} s:\n{logs.stdout[-6000:]}")
    TIMINGS["decision_s"] = time.monotonic() - TIMINGS["up_started"]
    print(f"first promotion decision {TIMINGS['decision_s']:.0f} s after `up` started")
    version, tags = decided["version"], decided["tags"]
    prefect = urls["PREFECT"]

    # Drift detected: the monitoring flow's event, and the retraining it triggered.
    events = _prefect(
        prefect, "events/filter", {"filter": {"event": {"name": ["fraudops.drift.detected"]}}}
    )["events"]
    assert events, "no fraudops.drift.detected event"
    assert tags["fraudops.trigger"] == "event"
    assert tags["fraudops.monitoring_run"] in {e["payload"]["monitoring_run_id"] for e in events}
    assert tags["fraudops.signal"] in {e["payload"]["signal"] for e in events}
    retrained = _prefect(
        prefect,
        "flow_runs/filter",
        {
            "deployments": {"name": {"any_": ["on-drift"]}},
            "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
        },
    )
    assert retrained, "no completed run of retraining/on-drift"

    # The challenger: a version after the bootstrap's, routed in an A/B that served traffic.
    assert int(version) > 1
    assert "fraudops.experiment.ab_started_at" in tags
    answered = _psql(
        compose,
        "SELECT count(*) FROM predictions WHERE NOT is_shadow AND arm = 'challenger' "
        f"AND model_version = '{version}'",
    )
    assert int(answered) > 0

    # The decision and its evidence, on the version and in the promotion run it names.
    assert tags["fraudops.decision"] in ("promoted", "rejected")
    assert tags["fraudops.decision_reason"]
    assert tags["fraudops.experiment.ab_recommendation"] in ("promote", "keep", "need_more_data")
    assert float(tags["fraudops.experiment.labelled_days"]) >= 2
    run = httpx.get(
        f"{urls['MLFLOW']}/api/2.0/mlflow/runs/get",
        params={"run_id": tags["fraudops.decision_run"]},
        timeout=30,
    ).json()["run"]
    run_tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert run_tags["fraudops.decision"] == tags["fraudops.decision"]
    assert run_tags["fraudops.challenger_version"] == version
    advanced = _prefect(
        prefect, "flow_runs/filter", {"deployments": {"name": {"any_": ["advance"]}}}
    )
    assert len(advanced) >= 2  # shadow to A/B, A/B to the decision: one step a run

    # Then back to the champion alone.
    routing: dict[str, Any] = {}
    until = time.monotonic() + 120
    while time.monotonic() < until:
        routing = httpx.get(f"{urls['API']}/v1/models", timeout=30).json()["routing"]["configured"]
        if routing["mode"] == "champion" and routing["shadow"] is None:
            break
        time.sleep(3)
    assert routing["mode"] == "champion" and routing["shadow"] is None, routing


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
