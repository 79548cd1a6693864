"""The HTTP face of serving: ``create_app(settings)`` builds the FastAPI application.

The scoring endpoints are ``async def`` and do all their work on the event loop: a thread
hop costs more than the model call. Request bodies are parsed by pydantic straight from
the bytes (strict JSON mode: ``"12"`` is not a number, ISO strings are datetimes), and
responses are written with orjson, skipping FastAPI's response re-validation; the OpenAPI
document still declares both, so clients and the schemathesis run see the real contract.

One request shape skips FastAPI's layers altogether: ``POST /v1/score`` with a declared body
size and no query string, which is nearly all traffic. The router, middlewares, exception
handlers and request object cost about 0.2 ms a request, a quarter of a score, so
`ScoringApp` answers it in one ASGI call with the same `_score`. A body that does not
validate goes on to FastAPI, replayed, so error answers have one implementation. The fast
path does the work of the app's own two middlewares (the body-size limit, the request
count) itself; a middleware added to the app later (auth, tracing, CORS) must see every
request, so any other middleware switches the fast path off.

Run it with ``fraudops serve`` (uvicorn, ``--factory``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fraudops.config import Settings, get_settings
from fraudops.experiments.routing import RoutingConfig
from fraudops.features.online_store import (
    LabelOutcome,
    OnlineStoreUnavailable,
    TransactionConflict,
)
from fraudops.features.online_store import Transaction as StoreTransaction
from fraudops.logs.records import LabelRecord, PredictionRecord
from serving.metrics import ServingMetrics
from serving.models import BIAS, LoadedModel, ModelLoadError
from serving.runtime import LogUnavailable, RoutingPlan, Runtime, Snapshot, source
from serving.schemas import (
    TOP_CONTRIBUTIONS,
    Feedback,
    FeedbackReceipt,
    Health,
    LoadedModelInfo,
    ModelsView,
    Problem,
    Readiness,
    Reloaded,
    RoutingState,
    Score,
    ScoreBatch,
    Transaction,
    TransactionBatch,
    ValidationProblem,
)
from serving.security import (
    API_KEY_HEADER,
    BodySizeLimit,
    content_length,
    is_admin,
    require_admin,
)
from serving.shadow import ShadowJob

logger = logging.getLogger(__name__)

#: The largest body accepted: a full batch of transactions fits about four times over.
MAX_BODY_BYTES = 64 * 1024
REQUEST_ID_HEADER = "X-Request-ID"
SCORE_PATH = "/v1/score"
#: Counted for a request whose client went away before its body arrived (never sent).
CLIENT_CLOSED_REQUEST = 499
_INTERNAL_ERROR = "internal error; the server log has the details"

_JSON = "application/json"
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True}
_BOOLEANS |= {"false": False, "0": False, "no": False, "off": False}
_BODY_MODELS: tuple[type[BaseModel], ...] = (Transaction, TransactionBatch, Feedback, RoutingConfig)


class ServiceUnavailable(Exception):
    """A dependency the request needs is away: answer 503 with the reason."""


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
        headers += [(b"content-type", _JSON.encode()), (b"content-length", b"%d" % len(payload))]
        await send({"type": "http.response.start", "status": status_code, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        metrics: ServingMetrics = self.state.metrics
        metrics.child(metrics.requests.labels, SCORE_PATH, str(status_code)).inc()

    async def _answer(self, tx: Transaction) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Status, body and extra headers, as the FastAPI route and its handlers answer."""
        try:
            answer = await _score(self.state.runtime, tx, explain=False)
        except (HTTPException, ServiceUnavailable) as error:
            status_code, detail = _problem(error)
            return status_code, orjson.dumps({"detail": detail}), []
        except Exception as error:
            logger.error("internal error on POST %s", SCORE_PATH, exc_info=error)
            return 500, orjson.dumps({"detail": _INTERNAL_ERROR}), []
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


def _problem(error: HTTPException | ServiceUnavailable) -> tuple[int, str]:
    if isinstance(error, ServiceUnavailable):
        return status.HTTP_503_SERVICE_UNAVAILABLE, str(error)
    return error.status_code, str(error.detail)


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
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
    key = settings.admin_api_key
    app.state.admin_key = key.get_secret_value() if key and key.get_secret_value() else None

    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(RequestMetrics, metrics=metrics)
    _add_error_handlers(app)
    app.include_router(_routes())
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


# --- the scoring path ----------------------------------------------------------------------


async def _score(runtime: Runtime, tx: Transaction, explain: bool) -> dict[str, Any]:
    """Features, routing, model, log hand-off, shadow hand-off: one transaction's answer."""
    started = time.perf_counter()
    snapshot = runtime.current()
    decision = snapshot.routing.router.route(tx.customer_id)
    model = _model_for(snapshot, decision.arm_alias)
    features = _features(runtime, tx)
    row = model.row(features)
    score = model.score(row)
    fraud = model.decide(score)
    request_id = uuid.uuid4().hex
    latency_s = time.perf_counter() - started
    record = PredictionRecord(
        request_id=request_id,
        transaction_id=tx.transaction_id,
        tx_datetime=tx.timestamp,
        customer_id=tx.customer_id,
        terminal_id=tx.terminal_id,
        features=features,
        model_name=model.name,
        model_version=model.version,
        model_alias=model.alias,
        arm=decision.arm_alias,
        score=score,
        decision=fraud,
        threshold=model.threshold,
        latency_ms=latency_s * 1000,
    )
    try:
        await runtime.log_served(record)
    except LogUnavailable as error:
        raise ServiceUnavailable(str(error)) from error
    if decision.shadow_alias is not None:
        shadow_model = snapshot.models.get(decision.shadow_alias)
        if shadow_model is not None and runtime.shadow is not None:
            runtime.shadow.submit(ShadowJob(record, row, shadow_model))
    metrics = runtime.metrics
    labels = (model.alias, model.version, decision.arm_alias)
    metrics.child(metrics.score_latency.labels, *labels).observe(latency_s)
    metrics.child(metrics.scores.labels, *labels, "1" if fraud else "0").inc()
    return {
        "request_id": request_id,
        "transaction_id": tx.transaction_id,
        "score": score,
        "fraud": fraud,
        "threshold": model.threshold,
        "model": {"name": model.name, "version": model.version, "alias": model.alias},
        "arm": decision.arm_alias,
        "explanation": _explanation(model, row, features) if explain else None,
    }


def _model_for(snapshot: Snapshot, alias: str) -> LoadedModel:
    model = snapshot.models.get(alias)
    if model is None:
        raise ServiceUnavailable(
            f"no {alias!r} model loaded: the registry has none yet or is unreachable "
            "without a cached copy (see /ready)"
        )
    return model


def _features(runtime: Runtime, tx: Transaction) -> dict[str, float]:
    assert runtime.store is not None
    try:
        return runtime.store.score_features(
            StoreTransaction(
                tx.transaction_id, tx.timestamp, tx.customer_id, tx.terminal_id, tx.amount
            )
        )
    except OnlineStoreUnavailable as error:
        raise ServiceUnavailable(f"online feature store unavailable: {error}") from error
    except TransactionConflict as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error


def _explanation(
    model: LoadedModel, row: np.ndarray, features: dict[str, float]
) -> list[dict[str, Any]]:
    contributions = model.contributions(row)
    contributions.pop(BIAS)
    largest = sorted(contributions.items(), key=lambda item: abs(item[1]), reverse=True)
    return [
        {"feature": name, "value": features.get(name), "contribution": float(value)}
        for name, value in largest[:TOP_CONTRIBUTIONS]
    ]


def _parse(model: type[BaseModel], body: bytes) -> Any:
    """Validate BODY as MODEL in strict JSON mode; errors name the field, under ``body``."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise RequestValidationError(
            [{**problem, "loc": ("body", *problem["loc"])} for problem in error.errors()]
        ) from None


def _json(payload: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code, headers, media_type=_JSON)


# --- routes --------------------------------------------------------------------------------


def _body(model: type[BaseModel], *, explain: bool = False) -> dict[str, Any]:
    """OpenAPI for a body (and ``explain``) that the endpoint parses itself.

    FastAPI's parameter machinery costs about a tenth of a scoring request, so the hot
    endpoints read their inputs directly and declare them here instead.
    """
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }
    if explain:
        extra["parameters"] = [
            {
                "name": "explain",
                "in": "query",
                "required": False,
                "description": "Add the largest feature contributions to each score.",
                "schema": {"type": "boolean", "default": False},
            }
        ]
    return extra


def _explain(request: Request) -> bool:
    """The ``explain`` query flag, read without FastAPI's dependency solving."""
    if not request.scope["query_string"]:
        return False
    raw = request.query_params.get("explain")
    if raw is None:
        return False
    flag = _BOOLEANS.get(raw.lower())
    if flag is None:
        raise RequestValidationError(
            [{"loc": ("query", "explain"), "msg": "must be true or false", "type": "bool_parsing"}]
        )
    return flag


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        401: "No X-API-Key header.",
        403: "Wrong key, or admin endpoints disabled (no key configured).",
        404: "Not found.",
        409: "Conflicts with the current state.",
        413: f"Body larger than {MAX_BODY_BYTES} bytes.",
        422: "Invalid input; every problem names its field.",
        503: "A dependency (model, feature store, log, registry) is unavailable.",
    }
    return {
        code: {
            "model": ValidationProblem if code == 422 else Problem,
            "description": described[code],
        }
        for code in codes
    }


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


#: Declared by hand: a FastAPI header parameter would cost dependency solving per request.
_OPTIONAL_ADMIN_KEY = {
    "name": API_KEY_HEADER,
    "in": "header",
    "required": False,
    "description": "The admin key: with it the routing includes its salt.",
    "schema": {"type": "string"},
}


def _routes() -> Any:
    from fastapi import APIRouter

    router = APIRouter()
    admin = [Depends(require_admin)]

    @router.post(
        SCORE_PATH,
        response_model=Score,
        openapi_extra=_body(Transaction, explain=True),
        responses=_errors(409, 413, 422, 503),
        tags=["scoring"],
        summary="Score one transaction",
    )
    async def score(request: Request) -> Response:
        """Features are computed online from the raw transaction; the router picks the
        model (champion, or the caller's sticky A/B arm) and a shadow may score it too."""
        tx = _parse(Transaction, await request.body())
        answer = await _score(_runtime(request), tx, _explain(request))
        return _json(answer, headers={REQUEST_ID_HEADER: answer["request_id"]})

    @router.post(
        "/v1/score/batch",
        response_model=ScoreBatch,
        openapi_extra=_body(TransactionBatch, explain=True),
        responses=_errors(409, 413, 422, 503),
        tags=["scoring"],
        summary="Score up to 100 transactions in order",
    )
    async def score_batch(request: Request) -> Response:
        """Each transaction is scored, logged and counted in the online state in order, as
        if sent one by one."""
        batch = _parse(TransactionBatch, await request.body())
        runtime, explain = _runtime(request), _explain(request)
        results = [await _score(runtime, tx, explain) for tx in batch.transactions]
        return _json({"results": results})

    @router.post(
        "/v1/feedback",
        response_model=FeedbackReceipt,
        openapi_extra=_body(Feedback),
        responses=_errors(404, 413, 422, 503),
        tags=["scoring"],
        summary="Report the fraud label of a scored transaction",
    )
    async def feedback(request: Request) -> Response:
        """The label updates the terminal's fraud counts; features read them once the
        label delay has passed, as offline training does."""
        label = _parse(Feedback, await request.body())
        runtime = _runtime(request)
        assert runtime.store is not None
        try:
            outcome = runtime.store.record_label(label.transaction_id, label.label)
        except OnlineStoreUnavailable as error:
            raise ServiceUnavailable(f"online feature store unavailable: {error}") from error
        if outcome == LabelOutcome.UNKNOWN_TRANSACTION:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"transaction {label.transaction_id} was not scored here, or is too old",
            )
        try:
            await runtime.log_label(LabelRecord(label.transaction_id, label.label))
        except LogUnavailable as error:
            raise ServiceUnavailable(str(error)) from error
        runtime.metrics.child(runtime.metrics.feedback.labels, str(label.label)).inc()
        return _json(
            {"transaction_id": label.transaction_id, "label": label.label, "status": outcome}
        )

    @router.get("/health", response_model=Health, tags=["operations"], summary="Alive")
    async def health() -> Response:
        return _json({"status": "ok"})

    @router.get(
        "/ready",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready; see detail."}},
        tags=["operations"],
        summary="Model loaded and stores reachable",
    )
    async def ready(request: Request) -> Response:
        runtime = _runtime(request)
        checks, problems = await runtime.readiness()
        models = runtime.current().models
        ready = checks["champion_loaded"] and checks["online_store"] and checks["prediction_log"]
        body = {
            "ready": ready,
            "models_loaded": sorted(models),
            "from_cache": any(model.from_cache for model in models.values()),
            "checks": checks,
            "detail": problems,
        }
        return _json(body, 200 if ready else 503)

    @router.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus(request: Request) -> Response:
        metrics: ServingMetrics = request.app.state.metrics
        return Response(metrics.exposition(), media_type=metrics.content_type)

    @router.get(
        "/v1/models",
        response_model=ModelsView,
        openapi_extra={"parameters": [_OPTIONAL_ADMIN_KEY]},
        tags=["operations"],
        summary="Loaded model versions and routing (its salt with the admin key)",
    )
    async def models(request: Request) -> Response:
        """Open to all, as monitoring and the demo read it; the routing salt, which lets
        anyone compute (and so choose) a customer's A/B arm, only with the admin key."""
        view = _models_view(_runtime(request).current())
        if not is_admin(request):
            for policy in ("configured", "active"):
                del view["routing"][policy]["salt"]
        return _json(view)

    @router.post(
        "/admin/reload",
        response_model=Reloaded,
        dependencies=admin,
        responses=_errors(401, 403, 503),
        tags=["admin"],
        summary="Load the registry's current version of every alias now",
    )
    async def reload(request: Request) -> Response:
        """Models swap atomically: requests in flight finish on the version they started."""
        runtime = _runtime(request)
        try:
            changed = await runtime.reload_models()
        except ModelLoadError as error:
            raise ServiceUnavailable(f"{error}; the loaded models stay") from error
        snapshot = runtime.current()
        return _json({"models": _model_infos(snapshot), "changed": changed})

    @router.put(
        "/admin/routing",
        response_model=RoutingState,
        dependencies=admin,
        openapi_extra=_body(RoutingConfig),
        responses=_errors(401, 403, 409, 413, 422),
        tags=["admin"],
        summary="Replace the routing policy",
    )
    async def put_routing(request: Request) -> Response:
        """Validated, checked against the loaded models, saved to the live routing file under
        FRAUDOPS_HOME (which other workers follow), then in force for the next request."""
        config = _parse(RoutingConfig, await request.body())
        runtime = _runtime(request)
        loaded = runtime.current().models
        missing = [alias for alias in config.required_aliases if alias not in loaded]
        if missing:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"not loaded: {', '.join(missing)} (loaded: {', '.join(sorted(loaded))}); "
                "register or reload them first",
            )
        plan = runtime.set_routing(config)
        return _json(_routing_view(plan))

    return router


def _model_infos(snapshot: Snapshot) -> list[dict[str, Any]]:
    return [
        LoadedModelInfo(
            alias=m.alias, name=m.name, version=m.version, threshold=m.threshold, source=source(m)
        ).model_dump()
        for m in sorted(snapshot.models.values(), key=lambda m: m.alias)
    ]


def _routing_view(plan: RoutingPlan) -> dict[str, Any]:
    return {
        "configured": plan.configured.model_dump(mode="json"),
        "active": plan.active.model_dump(mode="json"),
        "missing_aliases": list(plan.missing),
    }


def _models_view(snapshot: Snapshot) -> dict[str, Any]:
    return {"models": _model_infos(snapshot), "routing": _routing_view(snapshot.routing)}


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
        status_code, detail = _problem(error)
        return _json({"detail": detail}, status_code)

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> Response:
        logger.error("internal error on %s %s", request.method, request.url.path, exc_info=error)
        return _json({"detail": _INTERNAL_ERROR}, 500)


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


# --- metrics middleware --------------------------------------------------------------------


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
_FAST_PATH_MIRRORS = (BodySizeLimit, RequestMetrics)


# --- OpenAPI -------------------------------------------------------------------------------


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the schemas of the bodies the endpoints parse themselves."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            routes=app.routes,
        )
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for model in _BODY_MODELS:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
        app.openapi_schema = document
    return app.openapi_schema
