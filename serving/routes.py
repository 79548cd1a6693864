"""The HTTP routes of serving: scoring, feedback, operations and admin.

The scoring endpoints are ``async def`` and do all their work on the event loop: a thread
hop costs more than the model call. Request bodies are parsed by pydantic straight from
the bytes (strict JSON mode: ``"12"`` is not a number, ISO strings are datetimes), and
responses are written with orjson, skipping FastAPI's response re-validation; the OpenAPI
document still declares both, so clients and the schemathesis run see the real contract.
The plain single score usually never reaches these routes: `serving.fast_path` answers it
first, with the same `serving.scoring` code. What the routes declare to OpenAPI, the
document and its pages are in `serving.openapi`.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from fraudops.experiments.routing import RoutingConfig
from fraudops.features.store_types import LabelOutcome, OnlineStoreUnavailable
from fraudops.logs.records import LabelRecord
from serving.metrics import ServingMetrics
from serving.models import ModelLoadError
from serving.openapi import OPTIONAL_ADMIN_KEY, body_spec, error_responses
from serving.runtime import LogUnavailable, RoutingPlan, Runtime, Snapshot, source
from serving.schemas import (
    Feedback,
    FeedbackReceipt,
    Health,
    LoadedModelInfo,
    ModelsView,
    Readiness,
    Reloaded,
    RoutingState,
    Score,
    ScoreBatch,
    Transaction,
    TransactionBatch,
)
from serving.scoring import (
    JSON_MEDIA_TYPE,
    REQUEST_ID_HEADER,
    SCORE_PATH,
    ServiceUnavailable,
    score_transaction,
)
from serving.security import is_admin, require_admin

_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True}
_BOOLEANS |= {"false": False, "0": False, "no": False, "off": False}


# --- reading requests, writing answers ----------------------------------------------------


def _parse(model: type[BaseModel], body: bytes) -> Any:
    """Validate BODY as MODEL in strict JSON mode; errors name the field, under ``body``."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise RequestValidationError(
            [{**problem, "loc": ("body", *problem["loc"])} for problem in error.errors()]
        ) from None


def json_response(
    payload: Any, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON answer written by orjson; the app's error handlers answer with it too."""
    return Response(orjson.dumps(payload), status_code, headers, media_type=JSON_MEDIA_TYPE)


# --- routes --------------------------------------------------------------------------------


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


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime  # Starlette's state holds Any
    return runtime


def routes() -> APIRouter:
    """Every endpoint of the API; `serving.app` includes them in the application."""
    router = APIRouter()
    admin = [Depends(require_admin)]

    @router.post(
        SCORE_PATH,
        response_model=Score,
        openapi_extra=body_spec(Transaction, explain=True),
        responses=error_responses(409, 413, 422, 503),
        tags=["scoring"],
        summary="Score one transaction",
    )
    async def score(request: Request) -> Response:
        """Features are computed online from the raw transaction; the router picks the
        model (champion, or the caller's sticky A/B arm) and a shadow may score it too."""
        tx = _parse(Transaction, await request.body())
        answer = await score_transaction(_runtime(request), tx, _explain(request))
        return json_response(answer, headers={REQUEST_ID_HEADER: answer["request_id"]})

    @router.post(
        "/v1/score/batch",
        response_model=ScoreBatch,
        openapi_extra=body_spec(TransactionBatch, explain=True),
        responses=error_responses(409, 413, 422, 503),
        tags=["scoring"],
        summary="Score up to 100 transactions in order",
    )
    async def score_batch(request: Request) -> Response:
        """Each transaction is scored, logged and counted in the online state in order, as
        if sent one by one."""
        batch = _parse(TransactionBatch, await request.body())
        runtime, explain = _runtime(request), _explain(request)
        results = [await score_transaction(runtime, tx, explain) for tx in batch.transactions]
        return json_response({"results": results})

    @router.post(
        "/v1/feedback",
        response_model=FeedbackReceipt,
        openapi_extra=body_spec(Feedback),
        responses=error_responses(404, 413, 422, 503),
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
        return json_response(
            {"transaction_id": label.transaction_id, "label": label.label, "status": outcome}
        )

    @router.get("/health", response_model=Health, tags=["operations"], summary="Alive")
    async def health() -> Response:
        return json_response({"status": "ok"})

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
        return json_response(body, 200 if ready else 503)

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
        openapi_extra={"parameters": [OPTIONAL_ADMIN_KEY]},
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
        return json_response(view)

    @router.post(
        "/admin/reload",
        response_model=Reloaded,
        dependencies=admin,
        responses=error_responses(401, 403, 503),
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
        return json_response({"models": _model_infos(snapshot), "changed": changed})

    @router.put(
        "/admin/routing",
        response_model=RoutingState,
        dependencies=admin,
        openapi_extra=body_spec(RoutingConfig),
        responses=error_responses(401, 403, 409, 413, 422),
        tags=["admin"],
        summary="Replace the routing policy",
    )
    async def put_routing(request: Request) -> Response:
        """Validated, checked against the loaded models, saved to the live routing file under
        FRAUDOPS_HOME (which other workers follow), then in force for the next request."""
        config = _parse(RoutingConfig, await request.body())
        runtime = _runtime(request)
        loaded = await runtime.prepare_routing(config)
        missing = [alias for alias in config.required_aliases if alias not in loaded]
        if missing:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"not loaded: {', '.join(missing)} (loaded: {', '.join(sorted(loaded))}); "
                "register or reload them first",
            )
        plan = runtime.set_routing(config)
        return json_response(_routing_view(plan))

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
