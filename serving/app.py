"""The HTTP face of serving: ``create_app(settings)`` builds the FastAPI application.

This module assembles the pieces and keeps what belongs to the application as a whole: the
lifespan that opens stores and models, the middlewares, and the error handlers that turn
every failure into a JSON answer. The routes are in `serving.routes`, their OpenAPI document
and its pages in `serving.openapi`, the shortcut for plain scores (and the middleware it
mirrors) in `serving.fast_path`, the scoring both call in `serving.scoring`.

Run it with ``fraudops serve`` (uvicorn, ``--factory``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from fraudops.config import Settings, get_settings
from serving.fast_path import RequestMetrics, ScoringApp
from serving.metrics import ServingMetrics
from serving.openapi import add_docs_pages, openapi_document
from serving.routes import json_response, routes
from serving.runtime import Runtime
from serving.scoring import INTERNAL_ERROR, MAX_BODY_BYTES, ServiceUnavailable, http_problem
from serving.security import BodySizeLimit

logger = logging.getLogger(__name__)

#: Counted for a request whose client went away before its body arrived (never sent).
CLIENT_CLOSED_REQUEST = 499


def create_app(settings: Settings | None = None) -> FastAPI:
    """The serving application; stores and models open in its lifespan, not here."""
    settings = settings or get_settings()
    metrics = ServingMetrics()
    runtime = Runtime(settings, metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = ScoringApp(
        title="fraudops scoring API",
        version="1",
        summary="Fraud scores for card transactions, with A/B and shadow routing.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load from a CDN; add_docs_pages serves them locally
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
    key = settings.admin_api_key
    app.state.admin_key = key.get_secret_value() if key and key.get_secret_value() else None

    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(RequestMetrics, metrics=metrics)
    _add_error_handlers(app)
    app.include_router(routes())
    add_docs_pages(app)
    # FastAPI's documented way to supply the schema: replace the instance's openapi method.
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


# --- errors --------------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> Response:
        return JSONResponse({"detail": _field_errors(error)}, status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(ClientDisconnect)
    async def gone(_request: Request, _error: ClientDisconnect) -> Response:
        """The client left, or a read deadline cut it off, before its body was in: nothing
        broke and no one is there to answer. 499 (nginx's code for it) in the metrics."""
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(_request: Request, error: ServiceUnavailable) -> Response:
        status_code, detail = http_problem(error)
        return json_response({"detail": detail}, status_code)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> Response:
        logger.error("internal error on %s %s", request.method, request.url.path, exc_info=error)
        return json_response({"detail": INTERNAL_ERROR}, 500)


def _field_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    """Pydantic's problems without echoing inputs back, each with a dotted ``field``."""
    problems = []
    for problem in error.errors():
        where, *location = problem["loc"] or ("body",)
        if where not in ("body", "query", "path", "header"):
            location = [where, *location]
        problems.append(
            {
                "loc": list(problem["loc"]),
                "field": ".".join(str(part) for part in location) or "body",
                "msg": problem["msg"].removeprefix("Value error, "),
                "type": problem["type"],
            }
        )
    return problems
