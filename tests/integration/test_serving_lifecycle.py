"""A server's life around its models and stores: none yet, hot loaded, served from the disk
cache while the registry is away, and the production backends (Redis, PostgreSQL)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from serving_support import (
    LoggedModels,
    admin_headers,
    logged_models,
    register_versions,
    running_server,
    serving_env,
    synthetic_payloads,
    unique_model_name,
)

from fraudops.local.servers import create_postgres_database, drop_postgres_database, free_port
from fraudops.logs.database import open_prediction_log
from fraudops.logs.readers import read_predictions


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> LoggedModels:
    return logged_models(tmp_path_factory.getbasetemp())


def wait_until_ready(api: httpx.Client, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = api.get("/ready")
        if response.status_code == 200 or time.monotonic() > deadline:
            return response.json()
        time.sleep(0.25)


@pytest.mark.slow  # two server starts
def test_ready_follows_the_models_from_none_to_loaded_to_cached(
    models: LoggedModels, tmp_path: Path
) -> None:
    name = unique_model_name()  # nothing registered under it yet
    home = tmp_path / "home"
    env = serving_env(home, models, name, admin_key=None, model_poll_interval_s="0.5")
    transaction = synthetic_payloads(1, 42_000_000)[0]

    with (
        running_server(tmp_path / "first", env) as server,
        httpx.Client(base_url=server.url, timeout=30) as api,
    ):
        empty = api.get("/ready")
        assert empty.status_code == 503
        assert empty.json()["ready"] is False
        assert empty.json()["checks"]["champion_loaded"] is False
        assert empty.json()["checks"]["online_store"] is True
        refused = api.post("/v1/score", json=transaction)
        assert refused.status_code == 503 and "champion" in refused.json()["detail"]

        disabled = api.post("/admin/reload", headers=admin_headers())
        assert disabled.status_code == 403 and "disabled" in disabled.json()["detail"]

        register_versions(models, name, 1)  # the poller finds it: no restart, no reload
        loaded = wait_until_ready(api)
        assert loaded["ready"] is True and loaded["from_cache"] is False
        assert api.post("/v1/score", json=transaction).json()["model"]["version"] == "1"

    registry_down = env | {"FRAUDOPS_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"}
    with (
        running_server(tmp_path / "second", registry_down) as server,
        httpx.Client(base_url=server.url, timeout=30) as api,
    ):
        cached = api.get("/ready")
        assert cached.status_code == 200
        assert cached.json()["ready"] is True and cached.json()["from_cache"] is True
        models_view = api.get("/v1/models").json()["models"]
        assert [(m["alias"], m["version"], m["source"]) for m in models_view] == [
            ("challenger", "1", "cache"),  # the first version holds both aliases
            ("champion", "1", "cache"),
        ]
        again = synthetic_payloads(1, 43_000_000)[0]
        assert api.post("/v1/score", json=again).json()["model"]["version"] == "1"


@pytest.fixture
def postgres_log(postgres_url: str) -> Iterator[str]:
    url = create_postgres_database(postgres_url)
    yield url
    drop_postgres_database(url)


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    namespace = f"fraudops-test-{uuid.uuid4().hex[:8]}"
    yield namespace
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{namespace}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.services
def test_redis_online_store_and_postgres_log(
    models: LoggedModels, tmp_path: Path, redis_url: str, redis_namespace: str, postgres_log: str
) -> None:
    name = unique_model_name()
    register_versions(models, name, 2)
    env = serving_env(
        tmp_path / "home",
        models,
        name,
        online_store_url=redis_url,
        online_store_namespace=redis_namespace,
        prediction_log_url=postgres_log,
    )
    transactions = synthetic_payloads(20, 44_000_000)
    with (
        running_server(tmp_path, env) as server,
        httpx.Client(base_url=server.url, timeout=30) as api,
    ):
        assert api.get("/ready").json()["checks"] == {
            "champion_loaded": True,
            "routing_active": True,
            "online_store": True,
            "prediction_log": True,
        }
        routing = {"mode": "champion", "shadow": {"alias": "challenger"}}
        assert api.put("/admin/routing", json=routing, headers=admin_headers()).is_success
        answers = [api.post("/v1/score", json=t).json() for t in transactions]
        first = transactions[0]["transaction_id"]
        label = api.post("/v1/feedback", json={"transaction_id": first, "label": 1})
        assert label.status_code == 200

    # The server has stopped: its last rows were flushed on the way out.
    engine = open_prediction_log(postgres_log)
    try:
        rows = read_predictions(engine, rows="all")
    finally:
        engine.dispose()
    served = rows[~rows["is_shadow"]]
    assert sorted(served["request_id"]) == sorted(a["request_id"] for a in answers)
    assert rows["is_shadow"].sum() == len(answers)
    assert served.set_index("transaction_id").loc[first, "label"] == 1
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.exists(f"{redis_namespace}:x:{first}")
    finally:
        client.close()
