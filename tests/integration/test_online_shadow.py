"""The online learner shadows real traffic and learns from labels posted to the real API.

One ``fraudops serve`` with two worker processes: labels posted to either worker reach the
one learner state through the label log, each label once, and every worker serves the
state that was saved.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
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
from sqlalchemy import Engine

from fraudops.logs.database import open_prediction_log
from fraudops.logs.readers import read_predictions
from fraudops.modeling.online import ONLINE_ALIAS, ONLINE_MODEL_NAME, OnlineLearner
from serving.online_shadow import SETTLE_S, STATE_FOLDER
from serving.server import ServingProcess

pytestmark = pytest.mark.slow  # servers and subprocesses: tens of seconds

PROJECT = Path(__file__).resolve().parents[2]
STEP = 20  # labels per learning step in this server's params


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    models: LoggedModels = logged_models(tmp_path_factory.getbasetemp())
    name = unique_model_name()
    register_versions(models, name, 1)
    home = tmp_path_factory.mktemp("online-home")
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["learning"]["online"].update(snapshot_labels=STEP, threshold_labels=200)
    (home / "params.yaml").write_text(yaml.safe_dump(params))
    env = serving_env(home, models, name, params_path=str(home / "params.yaml"))
    with running_server(home, env, workers=2) as process:
        yield process


@pytest.fixture(scope="module")
def log(server: ServingProcess) -> Iterator[Engine]:
    engine = open_prediction_log(f"sqlite:///{Path(server.env['FRAUDOPS_HOME'])}/predictions.db")
    yield engine
    engine.dispose()


def state(server: ServingProcess) -> OnlineLearner | None:
    path = Path(server.env["FRAUDOPS_HOME"]) / STATE_FOLDER / "state.pkl"
    return OnlineLearner.load(path) if path.exists() else None


def learned(server: ServingProcess) -> int:
    saved = state(server)
    return 0 if saved is None else saved.learned


def score(server: ServingProcess, transactions: list[dict[str, Any]]) -> list[str]:
    """Score each on a new connection, so both workers answer some; the request ids."""
    ids = []
    for transaction in transactions:
        response = httpx.post(f"{server.url}/v1/score", json=transaction, timeout=30)
        assert response.status_code == 200, response.text
        ids.append(response.json()["request_id"])
    return ids


def post_labels(server: ServingProcess, labels: dict[int, int]) -> None:
    for transaction_id, label in labels.items():
        response = httpx.post(
            f"{server.url}/v1/feedback",
            json={"transaction_id": transaction_id, "label": label},
            timeout=30,
        )
        assert response.status_code == 200, response.text


def shadow_rows(log: Engine, request_ids: list[str]) -> pd.DataFrame:
    deadline = time.monotonic() + 20
    while True:
        rows = read_predictions(log, rows="shadow")
        rows = rows[rows["request_id"].isin(request_ids)]
        if len(rows) >= len(request_ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def wait_for(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def truth(transaction: dict[str, Any]) -> int:
    """The label these tests post: large amounts are fraud."""
    return int(transaction["amount"] >= 150)


def test_the_learner_shadows_traffic_and_learns_each_label_once_across_workers(
    server: ServingProcess, log: Engine
) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as api:
        routing = {"mode": "champion", "shadow": {"alias": ONLINE_ALIAS}}
        response = api.put("/admin/routing", json=routing, headers=admin_headers())
        assert response.status_code == 200, response.text
    time.sleep(2)  # the other worker follows the saved policy within a second

    first = synthetic_payloads(60, 70_000_000, customers=60)
    untaught = shadow_rows(log, score(server, first))
    assert len(untaught) == 60
    assert set(untaught["model_alias"]) == {ONLINE_ALIAS}
    assert set(untaught["model_name"]) == {ONLINE_MODEL_NAME}
    assert set(untaught["model_version"]) == {"0"}
    assert set(untaught["score"]) == {0.5}  # it has learnt nothing: no information

    post_labels(server, {tx["transaction_id"]: truth(tx) for tx in first[: 2 * STEP]})
    wait_for(lambda: learned(server) == 2 * STEP, f"{2 * STEP} labels learnt")

    saved = state(server)
    assert saved is not None and saved.version == str(2 * STEP)
    time.sleep(1.5)  # every worker picks up the saved state within a second
    second = synthetic_payloads(40, 70_100_000, customers=60)
    taught = shadow_rows(log, score(server, second))
    assert set(taught["model_version"]) == {str(2 * STEP)}
    # The shadow rows are the saved state's scores of the features serving logged.
    inputs = np.array([[row[name] for name in saved.features] for _, row in taught.iterrows()])
    np.testing.assert_allclose(taught["score"].to_numpy(), saved.scores(inputs), rtol=1e-12)
    assert set(taught["threshold"]) == {saved.threshold}

    # A label for an already labelled transaction (repeated, or flipped) is not learnt again.
    post_labels(server, {tx["transaction_id"]: 1 - truth(tx) for tx in first[:STEP]})
    time.sleep(SETTLE_S + 3)
    assert learned(server) == 2 * STEP
    post_labels(server, {tx["transaction_id"]: truth(tx) for tx in first[2 * STEP :]})
    wait_for(lambda: learned(server) == 3 * STEP, f"{3 * STEP} labels learnt")


def test_the_learner_may_only_shadow_and_leaves_with_its_policy(server: ServingProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as api:
        answer = api.put(
            "/admin/routing",
            json={"mode": "ab", "weights": {"champion": 1, ONLINE_ALIAS: 1}},
            headers=admin_headers(),
        )
        assert answer.status_code == 409 and ONLINE_ALIAS in answer.json()["detail"]

        routing = {"mode": "champion", "shadow": {"alias": ONLINE_ALIAS}}
        assert api.put("/admin/routing", json=routing, headers=admin_headers()).is_success
        aliases = {model["alias"] for model in api.get("/v1/models").json()["models"]}
        assert ONLINE_ALIAS in aliases

        alone = api.put("/admin/routing", json={"mode": "champion"}, headers=admin_headers())
        assert alone.is_success
        aliases = {model["alias"] for model in api.get("/v1/models").json()["models"]}
        assert ONLINE_ALIAS not in aliases
