"""A middleware added to the app runs on every request, the busiest route included.

``ScoringApp`` answers a plain ``POST /v1/score`` before FastAPI's layers, doing the work of
the app's own two middlewares itself. A middleware someone adds later (auth, tracing,
CORS) cannot be mirrored that way, so it must switch the shortcut off: here a real uvicorn
serves the app with one added, and every kind of score request passes through it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from serving_support import (
    LoggedModels,
    logged_models,
    register_versions,
    serving_env,
    synthetic_payloads,
    unique_model_name,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fraudops.config import get_settings
from fraudops.local.demo_api import wait_ready
from fraudops.local.servers import free_port
from serving.app import create_app
from serving.fast_path import ScoringApp

MARK = (b"x-added-middleware", b"ran")


class Marking:
    """A middleware of the kind a deployment adds: it marks every answer it sees."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), MARK]
            await send(message)

        await self.app(scope, receive, marked)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> LoggedModels:
    return logged_models(tmp_path_factory.getbasetemp())


@contextmanager
def serving_in_thread(app: ScoringApp) -> Iterator[str]:
    """APP under a real uvicorn on a free port, in this process; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def _app(tmp_path: Path, models: LoggedModels, monkeypatch: pytest.MonkeyPatch) -> ScoringApp:
    name = unique_model_name()
    register_versions(models, name, 1)
    for key, value in serving_env(tmp_path / "home", models, name).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    app = create_app(get_settings())
    assert isinstance(app, ScoringApp)
    return app


def test_an_added_middleware_sees_the_plain_score_and_every_other_request(
    tmp_path: Path, models: LoggedModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(tmp_path, models, monkeypatch)
    app.add_middleware(Marking)
    plain, with_query, chunked = synthetic_payloads(3, 900_000, 50)
    with serving_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as api:
        answers = {
            "plain": api.post("/v1/score", json=plain),
            "with a query string": api.post(
                "/v1/score", params={"explain": "false"}, json=with_query
            ),
            "chunked": api.post(
                "/v1/score",
                content=iter([json.dumps(chunked).encode()]),
                headers={"Content-Type": "application/json"},
            ),
            "invalid": api.post("/v1/score", json={"amount": "a lot"}),
            "models": api.get("/v1/models"),
        }
    assert {kind: r.status_code for kind, r in answers.items()} == {
        "plain": 200,
        "with a query string": 200,
        "chunked": 200,
        "invalid": 422,
        "models": 200,
    }
    unmarked = [kind for kind, r in answers.items() if r.headers.get(MARK[0].decode()) != "ran"]
    assert unmarked == []


def test_without_added_middleware_the_plain_score_keeps_its_shortcut(
    tmp_path: Path, models: LoggedModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(tmp_path, models, monkeypatch)
    with serving_in_thread(app) as url:
        assert httpx.post(f"{url}/v1/score", json=synthetic_payloads(1, 910_000, 50)[0]).is_success
    assert app._fast_path  # the app's own middlewares are mirrored, so the shortcut stays on
