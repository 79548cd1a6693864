"""The fast path: a plain ``POST /v1/score`` answered before FastAPI's layers, same guards.

One request shape skips FastAPI's layers altogether: ``POST /v1/score`` with a declared body
size and no query string, which is nearly all traffic. The router, middlewares, exception
handlers and request object cost about 0.2 ms a request, a quarter of a score, so
`ScoringApp` answers it in one ASGI call with the same `score_transaction` as the route. A
body that does not validate goes on to FastAPI, replayed, so error answers have one
implementation. The fast path does the work of the app's own two middlewares (the body-size
limit, the request count, `RequestMetrics` below) itself; a middleware added to the app
later (auth, tracing, CORS) must see every request, so any other middleware switches the
fast path off. The routes live apart, in `serving.routes`; this module is only the shortcut
and the middleware it mirrors, so the two can be read side by side.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, HTTPException
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import ServingMetrics
from serving.schemas import Transaction
from serving.scoring import (
    INTERNAL_ERROR,
    JSON_MEDIA_TYPE,
    MAX_BODY_BYTES,
    REQUEST_ID_HEADER,
    SCORE_PATH,
    ServiceUnavailable,
    http_problem,
    score_transaction,
)
from serving.security import BodySizeLimit, content_length

logger = logging.getLogger(__name__)


class ScoringApp(FastAPI):
    """FastAPI, with the plain single-transaction score answered before its layers."""

    #: Whether every middleware of the app is one the fast path does the work of.
    _fast_path = False

    def build_middleware_stack(self) -> ASGIApp:
        """Starlette builds the stack once, at the first request; no middleware can be added
        after that, so this is where the fast path is allowed or not, for good."""
        self._fast_path = all(m.cls in _FAST_PATH_MIRRORS for m in self.user_middleware)
        return super().build_middleware_stack()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        if not (self._fast_path and _plain_score_request(scope)):
            await super().__call__(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client went away
        try:
            tx = Transaction.model_validate_json(body)
        except ValidationError:
            await super().__call__(scope, _replaying(body, receive), send)
            return
        status_code, payload, headers = await self._answer(tx)
        headers += [
            (b"content-type", JSON_MEDIA_TYPE.encode()),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": status_code, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        metrics: ServingMetrics = self.state.metrics
        metrics.child(metrics.requests.labels, SCORE_PATH, str(status_code)).inc()

    async def _answer(self, tx: Transaction) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Status, body and extra headers, as the FastAPI route and its handlers answer."""
        try:
            answer = await score_transaction(self.state.runtime, tx, explain=False)
        except (HTTPException, ServiceUnavailable) as error:
            status_code, detail = http_problem(error)
            return status_code, orjson.dumps({"detail": detail}), []
        except Exception as error:
            logger.error("internal error on POST %s", SCORE_PATH, exc_info=error)
            return 500, orjson.dumps({"detail": INTERNAL_ERROR}), []
        request_id = (REQUEST_ID_HEADER.lower().encode(), answer["request_id"].encode())
        return 200, orjson.dumps(answer), [request_id]


def _plain_score_request(scope: Scope) -> bool:
    """A POST /v1/score with no query string and a declared body within the limit."""
    if scope["type"] != "http" or scope["path"] != SCORE_PATH or scope["method"] != "POST":
        return False
    if scope["query_string"]:
        return False
    declared = content_length(scope)
    return declared is not None and declared <= MAX_BODY_BYTES


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that hands BODY over once, then waits on the real one (disconnects)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


# --- the request count, a middleware of the app the fast path mirrors ----------------------


class RequestMetrics:
    """Counts every response by route template and status (unknown paths as ``other``)."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        code = 500

        async def recording_send(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "other")
            self.metrics.child(self.metrics.requests.labels, endpoint, str(code)).inc()


#: The app's own middlewares, whose work the fast path does itself (size check, count).
_FAST_PATH_MIRRORS: tuple[object, ...] = (BodySizeLimit, RequestMetrics)
