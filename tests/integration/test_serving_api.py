"""The scoring API against a real uvicorn server, real SQLite stores and registered models.

One server serves the whole module (starting one costs seconds); each test uses its own
transaction, customer and terminal ids, and tests that change the routing set it first.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from serving_support import (
    ADMIN_KEY,
    ID_SALT,
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

from fraudops.config import load_params
from fraudops.experiments.routing import RoutingConfig
from fraudops.features.definitions import (
    feature_columns,
    terminal_nb_tx_column,
    terminal_risk_column,
)
from fraudops.hashing import SaltedHasher
from fraudops.logs.database import open_prediction_log
from fraudops.logs.readers import read_predictions
from serving.schemas import MAX_BATCH_SIZE, TOP_CONTRIBUTIONS, Score
from serving.server import ServingProcess


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> LoggedModels:
    return logged_models(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def server(
    models: LoggedModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServingProcess]:
    """Champion v1 and challenger v2, SQLite stores, an admin key."""
    name = unique_model_name()
    register_versions(models, name, 2)
    home = tmp_path_factory.mktemp("serving-home")
    with running_server(home, serving_env(home, models, name)) as process:
        yield process


@pytest.fixture
def api(server: ServingProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def log(server: ServingProcess) -> Iterator[Engine]:
    engine = open_prediction_log(f"sqlite:///{Path(server.env['FRAUDOPS_HOME'])}/predictions.db")
    yield engine
    engine.dispose()


_next_id = iter(range(1_000_000, 10**9, 10_000))


def fresh(count: int, customers: int = 500) -> list[dict[str, Any]]:
    """Transactions with ids no other test uses."""
    return synthetic_payloads(count, next(_next_id), customers)


def logged_rows(engine: Engine, request_ids: set[str], shadow_too: bool = False) -> pd.DataFrame:
    """The log rows of REQUEST_IDS, waiting for the writer's next flush."""
    expected = len(request_ids)
    deadline = time.monotonic() + 15
    while True:
        rows = read_predictions(engine, rows="all" if shadow_too else "served")
        rows = rows[rows["request_id"].isin(request_ids)]
        served = rows[~rows["is_shadow"]]
        if len(served) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def set_routing(api: httpx.Client, routing: dict[str, Any]) -> None:
    response = api.put("/admin/routing", json=routing, headers=admin_headers())
    assert response.status_code == 200, response.text


def score_all(api: httpx.Client, transactions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answers = []
    for transaction in transactions:
        response = api.post("/v1/score", json=transaction)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


# --- scoring -------------------------------------------------------------------------------


def test_a_score_names_its_model_and_is_logged_once_with_its_features(
    api: httpx.Client, log: Engine
) -> None:
    set_routing(api, {"mode": "champion"})
    transaction = fresh(1)[0]
    response = api.post("/v1/score", json=transaction)

    assert response.status_code == 200
    answer = response.json()
    assert response.headers["X-Request-ID"] == answer["request_id"]
    assert answer["model"]["alias"] == answer["arm"] == "champion"
    assert answer["model"]["version"] == "1"
    assert 0 <= answer["score"] <= 1
    assert answer["fraud"] == (answer["score"] >= answer["threshold"])
    assert answer["explanation"] is None

    rows = logged_rows(log, {answer["request_id"]})
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["transaction_id"] == transaction["transaction_id"]
    assert row["model_version"] == "1" and row["arm"] == "champion"
    assert row["score"] == pytest.approx(answer["score"])
    assert bool(row["decision"]) == answer["fraud"]
    assert row["tx_amount"] == transaction["amount"]
    assert row[feature_columns(load_params().features)].notna().all()
    hasher = SaltedHasher(ID_SALT)
    assert row["customer_hash"] == hasher.pseudonym(transaction["customer_id"])
    assert row["terminal_hash"] == hasher.pseudonym(transaction["terminal_id"])


def test_an_aware_timestamp_is_stored_as_the_same_instant_in_utc(
    api: httpx.Client, log: Engine
) -> None:
    transaction = fresh(1)[0] | {"timestamp": "2018-06-03T08:30:00+05:00"}
    answer = score_all(api, [transaction])[0]
    row = logged_rows(log, {answer["request_id"]}).iloc[0]
    assert row["tx_datetime"] == pd.Timestamp("2018-06-03 03:30:00")
    assert row["tx_during_night"] == 1.0  # night by the UTC clock, as in the raw data


def test_explain_returns_the_largest_contributions_first(api: httpx.Client) -> None:
    response = api.post("/v1/score", params={"explain": "true"}, json=fresh(1)[0])
    assert response.status_code == 200
    explanation = response.json()["explanation"]
    assert len(explanation) == TOP_CONTRIBUTIONS
    sizes = [abs(item["contribution"]) for item in explanation]
    assert sizes == sorted(sizes, reverse=True)
    assert {item["feature"] for item in explanation} <= set(feature_columns(load_params().features))

    bad = api.post("/v1/score", params={"explain": "maybe"}, json=fresh(1)[0])
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["field"] == "explain"


def test_a_score_is_answered_alike_before_and_through_fastapis_layers(
    api: httpx.Client, log: Engine
) -> None:
    """A plain POST /v1/score is answered before FastAPI's router; with a query string or
    a chunked body it goes through FastAPI. Answers, headers, logs and conflicts agree."""
    set_routing(api, {"mode": "champion"})
    plain, with_query, chunked = fresh(3)
    responses = [
        api.post("/v1/score", json=plain),
        api.post("/v1/score", params={"explain": "false"}, json=with_query),
        api.post(
            "/v1/score",
            content=iter([json.dumps(chunked).encode()]),
            headers={"Content-Type": "application/json"},
        ),
    ]
    for response in responses:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["X-Request-ID"] == response.json()["request_id"]
        assert set(response.json()) == set(Score.model_fields)
    assert len(logged_rows(log, {r.json()["request_id"] for r in responses})) == 3

    moved = plain | {"terminal_id": plain["terminal_id"] + 1}
    conflicts = [
        api.post("/v1/score", json=moved),
        api.post("/v1/score", params={"explain": "false"}, json=moved),
    ]
    assert [c.status_code for c in conflicts] == [409, 409]
    assert conflicts[0].json() == conflicts[1].json()
    assert "scored before with other data" in conflicts[0].json()["detail"]


def test_a_batch_is_scored_in_order_and_its_size_is_bounded(api: httpx.Client, log: Engine) -> None:
    transactions = fresh(3)
    response = api.post("/v1/score/batch", json={"transactions": transactions})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["transaction_id"] for r in results] == [t["transaction_id"] for t in transactions]
    assert len(logged_rows(log, {r["request_id"] for r in results})) == 3

    too_many = api.post("/v1/score/batch", json={"transactions": fresh(1) * (MAX_BATCH_SIZE + 1)})
    empty = api.post("/v1/score/batch", json={"transactions": []})
    for refused in (too_many, empty):
        assert refused.status_code == 422
        assert refused.json()["detail"][0]["field"] == "transactions"


# --- bad input -----------------------------------------------------------------------------

GOOD = {
    "transaction_id": 5,
    "timestamp": "2018-06-01T10:00:00",
    "customer_id": 1,
    "terminal_id": 2,
    "amount": 10.5,
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": -0.01}, "amount"),
        ({"amount": -3.5}, "amount"),
        ({"amount": 1e9}, "amount"),
        ({"amount": "10.5"}, "amount"),
        ({"customer_id": -1}, "customer_id"),
        ({"terminal_id": 2**60}, "terminal_id"),
        ({"transaction_id": "5"}, "transaction_id"),
        ({"transaction_id": True}, "transaction_id"),
        ({"timestamp": "1970-01-01T00:00:00"}, "timestamp"),
        ({"timestamp": "3018-06-01T10:00:00"}, "timestamp"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": 1527847200}, "timestamp"),
        ({"merchant": "x"}, "merchant"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    api: httpx.Client, change: dict[str, Any], field: str
) -> None:
    response = api.post("/v1/score", json=GOOD | change)
    assert response.status_code == 422
    assert field in [problem["field"] for problem in response.json()["detail"]]


def test_a_missing_field_and_broken_json_are_422(api: httpx.Client) -> None:
    missing = api.post("/v1/score", json={k: v for k, v in GOOD.items() if k != "amount"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["field"] == "amount"

    broken = api.post(
        "/v1/score", content=b'{"transaction_id": 5,', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["type"] == "json_invalid"


def test_a_large_body_is_refused_with_413_declared_or_chunked(api: httpx.Client) -> None:
    huge = b'{"transactions": [' + b" " * 70_000 + b"]}"
    declared = api.post("/v1/score/batch", content=huge)
    assert declared.status_code == 413
    assert api.post("/v1/score", content=huge).status_code == 413

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(huge), 8192):
            yield huge[start : start + 8192]

    chunked = api.post("/v1/score/batch", content=chunks())
    assert chunked.status_code == 413


# --- feedback ------------------------------------------------------------------------------


def test_feedback_for_an_unknown_transaction_is_404(api: httpx.Client) -> None:
    response = api.post("/v1/feedback", json={"transaction_id": 987_654_321, "label": 1})
    assert response.status_code == 404
    assert "987654321" in response.json()["detail"]


def test_a_fraud_label_raises_terminal_risk_only_once_the_label_delay_passed(
    api: httpx.Client, log: Engine
) -> None:
    """A fraud at 09:00 counts in terminal risk from 09:00 d days later, as offline (the label
    timing rule of fraudops.features.label_timing: usable once d has passed, to the hour)."""
    features = load_params().features
    day = dt.datetime(2018, 6, 10, 9)
    labelled_terminal, control_terminal = 770_001, 770_002
    first_id = next(_next_id)

    def on(terminal: int, when: dt.datetime, offset: int) -> dict[str, Any]:
        return {
            "transaction_id": first_id + offset,
            "timestamp": when.isoformat(),
            "customer_id": 880_000 + offset,
            "terminal_id": terminal,
            "amount": 42.0,
        }

    score_all(api, [on(labelled_terminal, day, 0), on(control_terminal, day, 1)])
    feedback = api.post("/v1/feedback", json={"transaction_id": first_id, "label": 1})
    assert feedback.status_code == 200
    assert feedback.json() == {"transaction_id": first_id, "label": 1, "status": "recorded"}

    delay = features.label_delay_days  # days until the label is usable (on the hour here)
    before = day + dt.timedelta(days=delay - 1)
    after = day + dt.timedelta(days=delay)
    answers = score_all(
        api,
        [
            on(labelled_terminal, before, 2),
            on(labelled_terminal, after, 3),
            on(control_terminal, after, 4),
        ],
    )
    rows = logged_rows(log, {a["request_id"] for a in answers}).set_index("transaction_id")
    risk, count = terminal_risk_column(1), terminal_nb_tx_column(1)
    assert rows.loc[first_id + 2, risk] == 0.0  # the label is not usable yet
    assert rows.loc[first_id + 3, count] == 1.0
    assert rows.loc[first_id + 3, risk] == 1.0  # the one transaction of day D was fraud
    assert rows.loc[first_id + 4, risk] == 0.0  # same day, no label


# --- routing -------------------------------------------------------------------------------


def test_ab_routing_is_sticky_per_customer_and_follows_the_weights(api: httpx.Client) -> None:
    set_routing(api, {"mode": "ab", "weights": {"champion": 3, "challenger": 1}})
    customers = 400
    first = score_all(api, fresh(customers, customers))  # customer i is the i-th request
    again = score_all(api, fresh(customers, customers))
    assert [a["arm"] for a in again] == [a["arm"] for a in first]  # same customer, same arm
    share = sum(a["arm"] == "champion" for a in first) / customers
    assert share == pytest.approx(0.75, abs=0.08)
    for answer in first:
        assert answer["model"]["alias"] == answer["arm"]
        assert answer["model"]["version"] == {"champion": "1", "challenger": "2"}[answer["arm"]]


def test_shadow_scores_are_logged_apart_and_never_answer(api: httpx.Client, log: Engine) -> None:
    set_routing(api, {"mode": "champion", "shadow": {"alias": "challenger"}})
    answers = score_all(api, fresh(30))
    assert {a["arm"] for a in answers} == {"champion"}

    ids = {a["request_id"] for a in answers}
    rows = wait_for_shadow_rows(log, ids, len(ids))
    shadow = rows[rows["is_shadow"]]
    assert set(shadow["request_id"]) == ids
    assert set(shadow["model_alias"]) == {"challenger"}
    assert set(shadow["model_version"]) == {"2"}
    assert set(shadow["arm"]) == {"champion"}


def test_ab_with_shadow_shadows_only_the_other_arm(api: httpx.Client, log: Engine) -> None:
    set_routing(
        api,
        {
            "mode": "ab",
            "weights": {"champion": 1, "challenger": 1},
            "shadow": {"alias": "challenger"},
        },
    )
    answers = score_all(api, fresh(60, 60))
    by_champion = {a["request_id"] for a in answers if a["arm"] == "champion"}
    assert by_champion and len(by_champion) < len(answers)

    rows = wait_for_shadow_rows(log, {a["request_id"] for a in answers}, len(by_champion))
    assert set(rows[rows["is_shadow"]]["request_id"]) == by_champion
    served = rows[~rows["is_shadow"]]
    assert len(served) == len(answers)
    assert dict(zip(served["request_id"], served["arm"], strict=True)) == {
        a["request_id"]: a["arm"] for a in answers
    }


def wait_for_shadow_rows(engine: Engine, request_ids: set[str], shadows: int) -> pd.DataFrame:
    deadline = time.monotonic() + 15
    while True:
        rows = logged_rows(engine, request_ids, shadow_too=True)
        if rows["is_shadow"].sum() >= shadows or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_shadow_disagreements_are_counted(
    api: httpx.Client, log: Engine, server: ServingProcess
) -> None:
    set_routing(api, {"mode": "champion", "shadow": {"alias": "challenger"}})
    before = metric_total(api, "fraudops_shadow_disagreements_total")
    answers = score_all(api, fresh(80))
    ids = {a["request_id"] for a in answers}
    rows = wait_for_shadow_rows(log, ids, len(ids))
    decisions = rows.pivot(index="request_id", columns="is_shadow", values="decision")
    disagreements = int((decisions[True] != decisions[False]).sum())
    assert metric_total(api, "fraudops_shadow_disagreements_total") - before == disagreements


def test_routing_changes_are_validated_and_checked_against_loaded_models(
    api: httpx.Client,
) -> None:
    unknown = api.put(
        "/admin/routing",
        json={"mode": "ab", "weights": {"champion": 1, "nobody": 1}},
        headers=admin_headers(),
    )
    assert unknown.status_code == 409
    assert "nobody" in unknown.json()["detail"]

    invalid = api.put(
        "/admin/routing",
        json={"mode": "ab", "weights": {"champion": -1, "challenger": 1}},
        headers=admin_headers(),
    )
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["field"] == "weights.champion"

    set_routing(api, {"mode": "champion"})
    view = api.get("/v1/models").json()
    assert RoutingConfig.model_validate(view["routing"]["active"]) == RoutingConfig()


def test_the_routing_file_follows_admin_changes(api: httpx.Client, server: ServingProcess) -> None:
    routing = {"mode": "ab", "weights": {"champion": 9, "challenger": 1}, "salt": "fresh"}
    set_routing(api, routing)
    saved = Path(server.env["FRAUDOPS_ROUTING_PATH"]).read_text()
    assert "salt: fresh" in saved and "challenger: 1.0" in saved
    set_routing(api, {"mode": "champion"})


# --- operations ----------------------------------------------------------------------------


def test_ready_and_models_describe_what_serves(api: httpx.Client) -> None:
    ready = api.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["from_cache"] is False
    assert body["models_loaded"] == ["challenger", "champion"]
    assert all(body["checks"].values())

    models = api.get("/v1/models").json()["models"]
    assert {(m["alias"], m["version"], m["source"]) for m in models} == {
        ("champion", "1", "registry"),
        ("challenger", "2", "registry"),
    }
    assert api.get("/health").json() == {"status": "ok"}


def metric_total(api: httpx.Client, name: str) -> float:
    """The sum of every sample of NAME in /metrics."""
    total = 0.0
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(name) and line[len(name)] in "{ ":
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_expose_the_named_series(api: httpx.Client) -> None:
    score_all(api, fresh(3))
    api.post("/v1/score", json={"bad": 1})
    time.sleep(1.2)  # queue depths are sampled once a second
    text = api.get("/metrics").text
    for series in (
        'fraudops_requests_total{endpoint="/v1/score",status="200"}',
        'fraudops_requests_total{endpoint="/v1/score",status="422"}',
        "fraudops_score_latency_seconds_bucket{",
        'fraudops_scores_total{arm="champion"',
        "fraudops_shadow_queue_depth ",
        "fraudops_prediction_log_queue_depth ",
        'fraudops_prediction_log_rows_total{kind="prediction_written"}',
        'fraudops_model_info{alias="champion"',
    ):
        assert series in text, series
    assert metric_total(api, "fraudops_score_latency_seconds_count") >= 3


# --- admin ---------------------------------------------------------------------------------


def test_admin_needs_the_key(api: httpx.Client) -> None:
    missing = api.post("/admin/reload")
    assert missing.status_code == 401
    wrong = api.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY + "x"})
    assert wrong.status_code == 403
    also_wrong = api.put("/admin/routing", json={"mode": "champion"}, headers={"X-API-Key": "k"})
    assert also_wrong.status_code == 403

    right = api.post("/admin/reload", headers=admin_headers())
    assert right.status_code == 200
    assert right.json()["changed"] == []
    assert {m["alias"] for m in right.json()["models"]} == {"champion", "challenger"}


# --- the whole contract, fuzzed ------------------------------------------------------------


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_response_off_the_schema(
    api: httpx.Client, server: ServingProcess, tmp_path: Path
) -> None:
    """Every documented operation, with the admin key so admin endpoints are fuzzed too.

    Every check runs except ``positive_data_acceptance``: a routing policy has cross-field
    rules (an A/B needs two weighted aliases) and must name loaded models, which JSON
    Schema cannot say, so some schema-valid bodies are rightly refused.
    """
    command = [
        str(Path(sys.executable).parent / "st"),
        "run",
        f"{server.url}/openapi.json",
        "--checks=all",
        "--exclude-checks=positive_data_acceptance",
        "--max-examples=25",
        "--seed=20261123",
        "--workers=1",
        "--request-timeout=10",
        # A date-time string whose year must match a pattern is mostly generated and then
        # filtered; in a list of transactions that trips Hypothesis's filtering alarm.
        "--suppress-health-check=filter_too_much",
        f"--header=X-API-Key: {ADMIN_KEY}",
        "--no-color",
    ]
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    set_routing(api, {"mode": "champion"})
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout
