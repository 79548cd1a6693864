"""The serving edges an operator meets: who sees the A/B salt, what a SIGTERM exits with,
and what becomes of connections that hold the server without finishing a request.

Everything runs against a real ``fraudops serve`` child process over real sockets. The
module's server has timeouts of one second (``FRAUDOPS_SERVE_*``), so that a connection
the server fails to close shows up in seconds, not minutes.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from serving_support import (
    ADMIN_KEY,
    LoadDriver,
    LoggedModels,
    admin_headers,
    logged_models,
    register_versions,
    running_server,
    serving_env,
    synthetic_payloads,
    unique_model_name,
)

from fraudops.experiments.routing import RoutingConfig
from fraudops.logs.database import open_prediction_log
from fraudops.logs.readers import read_predictions
from serving.schemas import ModelsView
from serving.server import ServingProcess

#: Each of keep-alive, header and body timeouts on the module's server, in seconds.
TIMEOUT_S = 1.0
#: How late a close may come after its timeout on a busy two-core machine.
SLACK_S = 4.0
SECRET_SALT = "experiment-7-do-not-share"


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> LoggedModels:
    return logged_models(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def server(
    models: LoggedModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServingProcess]:
    """Champion v1 and challenger v2, an admin key, and one-second connection timeouts."""
    name = unique_model_name()
    register_versions(models, name, 2)
    home = tmp_path_factory.mktemp("serving-edges")
    timeouts = {
        "serve_keepalive_s": str(TIMEOUT_S),
        "serve_header_timeout_s": str(TIMEOUT_S),
        "serve_body_timeout_s": str(TIMEOUT_S),
    }
    with running_server(home, serving_env(home, models, name, **timeouts)) as process:
        yield process


@pytest.fixture
def api(server: ServingProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


# --- the A/B salt --------------------------------------------------------------------------


def test_the_routing_salt_is_shown_only_with_the_admin_key(api: httpx.Client) -> None:
    """Whoever knows the salt can compute every customer's arm, and pick theirs."""
    routing = {"mode": "ab", "weights": {"champion": 1, "challenger": 1}, "salt": SECRET_SALT}
    assert api.put("/admin/routing", json=routing, headers=admin_headers()).is_success

    for headers in ({}, {"X-API-Key": ADMIN_KEY + "x"}, {"X-API-Key": ""}):
        response = api.get("/v1/models", headers=headers)
        assert response.status_code == 200
        assert SECRET_SALT not in response.text
        view = response.json()["routing"]
        for policy in (view["configured"], view["active"]):
            assert "salt" not in policy
            assert policy["mode"] == "ab" and policy["weights"] == {"champion": 1, "challenger": 1}
        ModelsView.model_validate(response.json())  # still the documented shape

    admin = api.get("/v1/models", headers=admin_headers())
    assert admin.status_code == 200
    for policy in (admin.json()["routing"]["configured"], admin.json()["routing"]["active"]):
        assert RoutingConfig.model_validate(policy) == RoutingConfig.model_validate(routing)
    api.put("/admin/routing", json={"mode": "champion"}, headers=admin_headers())


def test_the_openapi_document_says_the_salt_needs_the_admin_key(api: httpx.Client) -> None:
    document = api.get("/openapi.json").json()
    operation = document["paths"]["/v1/models"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["X-API-Key"]
    assert operation["parameters"][0]["required"] is False
    reference = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    schemas = document["components"]["schemas"]
    routing_ref = schemas[reference.rsplit("/", 1)[1]]["properties"]["routing"]["$ref"]
    routing = schemas[routing_ref.rsplit("/", 1)[1]]
    policy = schemas[routing["properties"]["active"]["$ref"].rsplit("/", 1)[1]]
    assert "salt" not in policy.get("required", [])
    assert "admin key" in policy["properties"]["salt"]["description"]


@pytest.mark.slow  # a Prefect server
def test_retraining_keeps_the_experiment_salt_when_it_shadows_the_challenger(
    api: httpx.Client, server: ServingProcess, prefect_api: str
) -> None:
    """Retraining reads the policy from ``GET /v1/models`` and keeps its salt, so customers
    keep their arms: it must ask with the admin key now that the salt needs it."""
    from prefect import flow

    from fraudops.config import Settings
    from pipelines.retraining import shadow_challenger

    @flow(name="shadow the challenger, in a test")
    def switch_to_shadow(url: str, key: str) -> str:
        return shadow_challenger(Settings(serving_url=url, admin_api_key=key))

    routing = {"mode": "ab", "weights": {"champion": 1, "challenger": 1}, "salt": SECRET_SALT}
    assert api.put("/admin/routing", json=routing, headers=admin_headers()).is_success
    try:
        assert switch_to_shadow(server.url, ADMIN_KEY) == "shadow: challenger version 2"
        configured = api.get("/v1/models", headers=admin_headers()).json()["routing"]["configured"]
        assert RoutingConfig.model_validate(configured) == RoutingConfig(
            mode="champion", shadow={"alias": "challenger"}, salt=SECRET_SALT
        )
    finally:
        api.put("/admin/routing", json={"mode": "champion"}, headers=admin_headers())


# --- idle and slow connections -------------------------------------------------------------


@dataclass
class Held:
    """One raw connection, when its timeout began as the client sees it, and when the
    server closed it. Headers are owed from the connection's opening, a body from its
    headers, the next request from the previous response."""

    kind: str
    sock: socket.socket
    started_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None


def _connect(server: ServingProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _read_response(sock: socket.socket) -> bytes:
    """One whole response (its Content-Length), read off a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head


def _wait_for_closes(held: list[Held], until: float) -> None:
    """Record when the server closes each connection (EOF or reset), until UNTIL."""
    selector = selectors.DefaultSelector()
    for connection in held:
        connection.sock.setblocking(False)
        selector.register(connection.sock, selectors.EVENT_READ, connection)
    open_ = len(held)
    while open_ and time.monotonic() < until:
        for key, _ in selector.select(timeout=0.1):
            connection: Held = key.data
            try:
                if connection.sock.recv(65536):
                    continue  # something before the close; wait for the close itself
            except (ConnectionResetError, BlockingIOError):
                pass
            connection.closed_at = time.monotonic()
            selector.unregister(connection.sock)
            open_ -= 1
    selector.close()


def _score_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.slow  # a thousand connections held for several seconds
def test_idle_and_slow_connections_are_closed_after_their_timeouts(
    api: httpx.Client, server: ServingProcess
) -> None:
    """Silent connections, headers that never end, bodies that never end, idle kept-alive
    connections and kept-alive ones whose next request stops halfway are each closed once
    its timeout has passed, not before, while the server keeps answering everyone else;
    nothing is logged as a server error."""
    body = json.dumps(synthetic_payloads(1, 91_000_000)[0]).encode()
    feedback = json.dumps({"transaction_id": 91_000_000, "label": 1}).encode()
    held: list[Held] = []
    try:
        kinds = ("silent", "header", "body", "idle", "next")
        for i in range(1000):
            held.append(Held(kind=kinds[i % len(kinds)], sock=_connect(server)))
        bodies = [("/v1/score", body), ("/v1/score?explain=true", body), ("/v1/feedback", feedback)]
        for n, connection in enumerate(held):
            if connection.kind == "header":
                connection.sock.sendall(b"POST /v1/score HTTP/1.1\r\nHost: test\r\nContent-Ty")
            elif connection.kind == "body":
                # Both scoring paths (before FastAPI and through it) and another route.
                path, payload = bodies[n // len(kinds) % len(bodies)]
                connection.started_at = time.monotonic()
                connection.sock.sendall(
                    _score_head(path, len(payload)) + payload[: len(payload) // 2]
                )
            else:  # answered once, then idle ("idle") or half of the next request ("next")
                connection.sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
                assert b" 200 " in _read_response(connection.sock)
                if connection.kind == "next":
                    connection.sock.sendall(b"GET /health HTTP/1.1\r\nHo")
                connection.started_at = time.monotonic()

        # Held connections do not keep anyone else out.
        assert api.get("/health").status_code == 200
        assert api.post("/v1/score", json=synthetic_payloads(1, 91_000_001)[0]).status_code == 200

        last_started = max(connection.started_at for connection in held)
        _wait_for_closes(held, until=last_started + TIMEOUT_S + SLACK_S)
    finally:
        for connection in held:
            connection.sock.close()

    still_open = {}
    for connection in held:
        if connection.closed_at is None:
            still_open[connection.kind] = still_open.get(connection.kind, 0) + 1
    assert not still_open, f"held open past {TIMEOUT_S + SLACK_S} s: {still_open}"
    early = [c.kind for c in held if c.closed_at - c.started_at < TIMEOUT_S * 0.9]
    assert not early, f"closed before their timeout: {early[:10]}"
    # A new connection: the client's pooled one went idle as long as the held ones, and the
    # server may close it (keep-alive timeout) just as a request goes out on it.
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
    # A body cut off on a FastAPI route is counted as the client's leaving, not an error.
    assert 'endpoint="/v1/feedback",status="499"' in api.get("/metrics").text


def test_a_request_sent_in_pieces_within_the_timeouts_is_answered(server: ServingProcess) -> None:
    """The timeouts bound how long a request may take to arrive, not how it is cut up;
    a kept-alive connection serves its next request as usual."""
    payload = json.dumps(synthetic_payloads(1, 92_000_000)[0]).encode()
    head = _score_head("/v1/score", len(payload))
    with _connect(server) as sock:
        for piece in (head[:20], head[20:], payload[:10], payload[10:]):
            sock.sendall(piece)
            time.sleep(TIMEOUT_S / 4)
        assert b" 200 " in _read_response(sock)

        time.sleep(TIMEOUT_S / 2)  # idle, but within the keep-alive timeout
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        assert b" 200 " in _read_response(sock)


# --- SIGTERM -------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sigterm_under_load_drains_writes_every_row_and_exits_0(
    models: LoggedModels, tmp_path: Path, workers: int
) -> None:
    """Supervisors (systemd, Kubernetes, the demo) read a non-zero status as a crash."""
    name = unique_model_name()
    register_versions(models, name, 1)
    home = tmp_path / "home"
    server = ServingProcess(tmp_path, workers=workers, env=serving_env(home, models, name))
    server.start()
    try:
        with LoadDriver(server.url, synthetic_payloads(5_000, 93_000_000), concurrency=4) as load:
            load.wait_for(100)
            status = server.terminate()
            result = load.stop()
    finally:
        server.stop()

    assert status == 0, server.log_path.read_text(errors="replace")[-3000:]
    engine = open_prediction_log(f"sqlite:///{home / 'predictions.db'}")
    try:
        logged = set(read_predictions(engine, rows="served")["request_id"])
    finally:
        engine.dispose()
    assert result.ok and set(result.ok) <= logged, "an answered request has no log row"
