"""The compose profile ``scale`` for real: API replicas behind nginx, and a Dask cluster.

Its own stack (project ``fraudops-scale-test``) on the engine, base image and image cache
that ``test_compose_up.py`` uses, one after the other (the engine's lock). Only what the
profile adds is started, with what it depends on: ``balancer``, ``api-replica`` and
``dask-worker`` (so the stores, MLflow, Prefect, ``bootstrap`` and ``dask-scheduler``);
no traffic, flows, dashboards or Prometheus. The stack runs as `.env.example` documents
the profile: ``FRAUDOPS_DASK_ADDRESS`` names the scheduler, so ``bootstrap`` trains on it.

Every request from here goes to the balancer's port on 127.0.0.1; a single replica is
asked through ``docker compose exec --index``, from inside its own container. nginx marks
each answer with the address of the replica that gave it (``X-Upstream``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import pytest
from compose_support import (
    BASE_IMAGE,
    REPO,
    Engine,
    Stack,
    free_port,
    install_tools,
    missing_tools,
    small_params,
)

pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600)]

REPLICAS = 2
WORKERS = 2
DASK_ADDRESS = "tcp://dask-scheduler:8786"
ADMIN_KEY = "fraudops-scale-test-admin"
MODEL_NAME = "fraud-detector"
UP_TIMEOUT_S = 1500
THROUGHPUT_S = 20
# Python in a container fetches a URL and prints the body (the images have no curl).
FETCH = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=10).read().decode())"

T = TypeVar("T")


class ScaleStack:
    """The running stack, the balancer's URL, MLflow's, and each replica by its address."""

    def __init__(self, compose: Stack, balancer: str, mlflow: str) -> None:
        self.compose = compose
        self.balancer = balancer
        self.mlflow = mlflow
        self.replicas = self._replica_addresses()

    def _replica_addresses(self) -> dict[str, int]:
        """Each replica's address on the stack's network -> its index for ``exec --index``."""
        ids = self.compose.run("ps", "--quiet", "api-replica").stdout.split()
        template = (
            '{{index .Config.Labels "com.docker.compose.container-number"}} '
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        )
        found = {}
        for container in ids:
            number, address = self.compose.engine.docker(
                "inspect", "--format", template, container
            ).stdout.split()
            found[address] = int(number)
        return found

    def fetch(self, service: str, url: str, index: int = 1) -> str:
        """GET URL from inside replica INDEX of SERVICE; the body it answered."""
        done = self.compose.run(
            "exec", "-T", "--index", str(index), service, "python", "-c", FETCH, url
        )
        return done.stdout

    def replica_models(self, index: int) -> dict[str, Any]:
        return json.loads(self.fetch("api-replica", "http://127.0.0.1:8000/v1/models", index))


@pytest.fixture(scope="module")
def stack() -> Iterator[ScaleStack]:
    if missing_tools():
        if os.geteuid() != 0:
            pytest.skip(f"needs root to install {', '.join(missing_tools())}")
        install_tools()
    ports = {name: str(free_port()) for name in ("BALANCER", "MLFLOW", "PREFECT")}
    variables = {f"{name}_PORT": port for name, port in ports.items()} | {
        "BASE_IMAGE": BASE_IMAGE,
        "FRAUDOPS_IMAGE": "localhost/fraudops:test",
        "COMPOSE_PROFILES": "scale",
        "API_REPLICAS": str(REPLICAS),
        "DASK_WORKERS": str(WORKERS),
        "FRAUDOPS_DASK_ADDRESS": DASK_ADDRESS,
        "FRAUDOPS_MODEL_POLL_INTERVAL_S": "2",
        "FRAUDOPS_ADMIN_API_KEY": ADMIN_KEY,
    }
    with Engine() as engine:
        engine.ensure_base_image()
        variables["FRAUDOPS_TEST_PARAMS"] = str(small_params(engine.workdir / "params.yaml"))
        compose = Stack(engine, "fraudops-scale-test", variables)
        compose.run("down", "--volumes", "--remove-orphans", "--timeout", "5")
        try:
            started = time.monotonic()
            # Only `api` builds the project image, and it is not among the services started.
            compose.run("build", "api")
            up = compose.run(
                "up",
                "--detach",
                "--build",
                "--wait",
                "--wait-timeout",
                str(UP_TIMEOUT_S),
                "balancer",
                "api-replica",
                "dask-worker",
                check=False,
            )
            print(
                f"\ncompose --profile scale build + up --wait: {time.monotonic() - started:.0f} s"
            )
            if up.returncode != 0:
                pytest.fail(
                    f"the stack did not become healthy:\n{up.stderr[-3000:]}\n"
                    f"{compose.unhealthy_logs()}"
                )
            yield ScaleStack(
                compose,
                f"http://127.0.0.1:{ports['BALANCER']}",
                f"http://127.0.0.1:{ports['MLFLOW']}",
            )
        finally:
            compose.run("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)
            engine.docker("image", "prune", "--force", check=False)


def _until(read: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 60) -> T:
    """READ until DONE holds of its value or TIMEOUT_S passes; the last value read."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(1)
        value = read()
    return value


_next_id = iter(range(9_500_000_000, 9_600_000_000))


def _transaction(customer_id: int) -> dict[str, Any]:
    transaction_id = next(_next_id)
    return {
        "transaction_id": transaction_id,
        "timestamp": dt.datetime(2018, 6, 10, 12, 0, tzinfo=dt.UTC).isoformat(),
        "customer_id": customer_id,
        "terminal_id": transaction_id % 9000,
        "amount": 31.5,
    }


# --- the balancer and the replicas ---------------------------------------------------------


def test_requests_through_the_balancer_reach_every_replica(stack: ScaleStack) -> None:
    assert len(stack.replicas) == REPLICAS
    with httpx.Client(base_url=stack.balancer, timeout=30) as client:
        answers = [client.post("/v1/score", json=_transaction(7)) for _ in range(4 * REPLICAS)]
    assert {response.status_code for response in answers} == {200}
    served_by = Counter(response.headers["X-Upstream"].rsplit(":", 1)[0] for response in answers)
    assert set(served_by) == set(stack.replicas), served_by


def test_requests_per_second_through_the_balancer(stack: ScaleStack) -> None:
    """The serving benchmark's own load generator (bench_serving.py drive: keep-alive
    connections, as fast as answered), here against nginx and two replicas."""
    target = stack.balancer.removeprefix("http://")
    started = time.monotonic()
    drive = [sys.executable, str(REPO / "benchmarks" / "bench_serving.py"), "drive", target]
    done = subprocess.run(
        [*drive, "--duration", str(THROUGHPUT_S), "--connections", "32"],
        capture_output=True,
        text=True,
        check=False,
        timeout=THROUGHPUT_S + 120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stdout)
    answered = len(run["latencies_ms"])
    latencies = sorted(run["latencies_ms"])
    print(
        f"\nthrough the balancer, {REPLICAS} replicas x 1 worker, 32 connections, "
        f"{run['seconds']:.1f} s: {answered / run['seconds']:.0f} req/s, "
        f"p50 {latencies[answered // 2]:.1f} ms, p99 {latencies[answered * 99 // 100]:.1f} ms, "
        f"statuses {run['statuses']}; {os.cpu_count()} cores for everything "
        f"(engine, stack, load generator), load average {os.getloadavg()[0]:.1f} at the end, "
        f"{time.monotonic() - started:.0f} s in all"
    )
    assert set(run["statuses"]) == {"200"}, run["statuses"]
    assert answered > 0


def test_every_scored_transaction_is_logged_once_whichever_replica_scored_it(
    stack: ScaleStack,
) -> None:
    count = 300
    transactions = [_transaction(customer) for customer in range(count)]
    with (
        httpx.Client(base_url=stack.balancer, timeout=30) as client,
        ThreadPoolExecutor(max_workers=8) as pool,
    ):
        answers = list(pool.map(lambda tx: client.post("/v1/score", json=tx), transactions))
    assert [response.status_code for response in answers] == [200] * count
    served_by = Counter(response.headers["X-Upstream"] for response in answers)
    assert len(served_by) == REPLICAS, served_by
    first, last = transactions[0]["transaction_id"], transactions[-1]["transaction_id"]
    query = (
        "SELECT count(*), count(DISTINCT transaction_id), count(DISTINCT request_id) "
        f"FROM predictions WHERE NOT is_shadow AND transaction_id BETWEEN {first} AND {last}"
    )

    def logged() -> str:
        done = stack.compose.run(
            "exec", "-T", "postgres", "psql", "-U", "fraudops", "-d", "fraudops", "-tAc", query
        )
        return done.stdout.strip()

    expected = f"{count}|{count}|{count}"
    assert _until(logged, lambda rows: rows == expected) == expected
    ids = {response.json()["request_id"] for response in answers}
    assert len(ids) == count


def test_an_ab_split_keeps_each_customer_in_one_arm_on_every_replica(stack: ScaleStack) -> None:
    policy = {"mode": "ab", "weights": {"champion": 50, "challenger": 50}}
    put = httpx.put(
        f"{stack.balancer}/admin/routing",
        json=policy,
        headers={"X-API-Key": ADMIN_KEY},
        timeout=30,
    )
    assert put.status_code == 200, put.text
    # One replica took the request; the other follows the live file on the shared volume.
    for index in stack.replicas.values():
        view = _until(
            lambda index=index: stack.replica_models(index),
            lambda view: view["routing"]["active"]["mode"] == "ab",
        )
        assert view["routing"]["active"]["mode"] == "ab", (index, view["routing"])
    arms: dict[int, set[str]] = {}
    replicas: dict[int, set[str]] = {}
    with httpx.Client(base_url=stack.balancer, timeout=30) as client:
        for customer in range(1000, 1030):
            arms[customer], replicas[customer] = set(), set()
            for _ in range(8):  # until both replicas have answered this customer
                response = client.post("/v1/score", json=_transaction(customer))
                assert response.status_code == 200, response.text
                arms[customer].add(response.json()["arm"])
                replicas[customer].add(response.headers["X-Upstream"])
                if len(replicas[customer]) == REPLICAS:
                    break
    assert all(len(served) == REPLICAS for served in replicas.values()), replicas
    assert all(len(arm) == 1 for arm in arms.values()), arms
    assert set().union(*arms.values()) == {"champion", "challenger"}


@pytest.fixture(scope="module")
def new_version(stack: ScaleStack) -> str:
    """A second registered version of the champion's model (same logged model), unaliased."""
    api = f"{stack.mlflow}/api/2.0/mlflow"
    champion = httpx.get(
        f"{api}/registered-models/alias",
        params={"name": MODEL_NAME, "alias": "champion"},
        timeout=30,
    )
    assert champion.status_code == 200, champion.text
    current = champion.json()["model_version"]
    # A logged model's URI is models:/<model id>; the server wants the id named as well.
    source = current["source"]
    body = {
        "name": MODEL_NAME,
        "source": source,
        "run_id": current["run_id"],
        "model_id": current.get("model_id") or source.removeprefix("models:/"),
    }
    created = httpx.post(f"{api}/model-versions/create", json=body, timeout=30)
    assert created.status_code == 200, created.text
    version = created.json()["model_version"]["version"]
    assert version != current["version"]
    return str(version)


def test_a_promotion_reaches_every_replica(stack: ScaleStack, new_version: str) -> None:
    moved = httpx.post(
        f"{stack.mlflow}/api/2.0/mlflow/registered-models/alias",
        json={"name": MODEL_NAME, "alias": "champion", "version": new_version},
        timeout=30,
    )
    assert moved.status_code == 200, moved.text

    def champion_version(index: int) -> str | None:
        models = stack.replica_models(index)["models"]
        return next((m["version"] for m in models if m["alias"] == "champion"), None)

    # Each replica's own poller finds the moved alias (FRAUDOPS_MODEL_POLL_INTERVAL_S=2).
    for index in stack.replicas.values():
        seen = _until(lambda index=index: champion_version(index), lambda v: v == new_version)
        assert seen == new_version, f"replica {index} still serves champion version {seen}"


# --- the Dask cluster ----------------------------------------------------------------------


def _scheduler_metrics(stack: ScaleStack) -> list[tuple[str, dict[str, str], float]]:
    """The scheduler's Prometheus samples: (name, labels, value)."""
    text = stack.fetch("dask-scheduler", "http://127.0.0.1:8787/metrics")
    samples = []
    for name, labels, value in re.findall(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", text, flags=re.M):
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        samples.append((name, pairs, float(value)))
    return samples


def _computed(stack: ScaleStack) -> Counter[str]:
    """Tasks the workers have computed so far, by the name of the function they ran."""
    return Counter(
        {
            labels["task_prefix_name"]: round(value)
            for name, labels, value in _scheduler_metrics(stack)
            if name == "dask_scheduler_prefix_state_totals_total" and labels["state"] == "memory"
        }
    )


def test_bootstrap_trained_and_score_batch_scores_on_the_dask_workers(stack: ScaleStack) -> None:
    workers = [
        value for name, _, value in _scheduler_metrics(stack) if name == "dask_scheduler_workers"
    ]
    assert sum(workers) == WORKERS
    # Bootstrap's `fraudops train` fitted its candidates there (fraudops.scale.dask_training).
    before = _computed(stack)
    assert before["fold_scores"] >= 1, before
    # The last five days, scored from a one-off bootstrap container (its environment).
    script = (
        "mkdir -p /tmp/recent && cp -r $(ls -d data/raw/day=* | tail -n 5) /tmp/recent/ "
        "&& exec fraudops score-batch --raw /tmp/recent --out /tmp/recent-scores.parquet"
    )
    done = stack.compose.run(
        "run",
        "--rm",
        "--no-deps",
        "-e",
        "COLUMNS=200",
        "bootstrap",
        "sh",
        "-c",
        script,
        check=False,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "transactions of data" in output, output[-3000:]
    after = _computed(stack)
    # Features by entity part and scores by row slice, each on the workers.
    assert after["feature_part"] > before["feature_part"], after
    assert after["score_frame"] > before["score_frame"], after
