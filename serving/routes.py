"""The HTTP routes of serving: scoring, feedback, operations and admin, with their OpenAPI.

The scoring endpoints are ``async def`` and do all their work on the event loop: a thread
hop costs more than the model call. Request bodies are parsed by pydantic straight from
the bytes (strict JSON mode: ``"12"`` is not a number, ISO strings are datetimes), and
responses are written with orjson, skipping FastAPI's response re-validation; the OpenAPI
document still declares both, so clients and the schemathesis run see the real contract.
The plain single score usually never reaches these routes: `serving.fast_path` answers it
first, with the same `serving.scoring` code. The pages that show the document (/docs,
/redoc) load their scripts and styles from the API itself, never from a CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError

from fraudops.experiments.routing import RoutingConfig
from fraudops.features.store_types import LabelOutcome, OnlineStoreUnavailable
from fraudops.logs.records import LabelRecord
from serving.metrics import ServingMetrics
from serving.models import ModelLoadError
from serving.runtime import LogUnavailable, RoutingPlan, Runtime, Snapshot, source
from serving.schemas import (
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
from serving.scoring import (
    JSON_MEDIA_TYPE,
    MAX_BODY_BYTES,
    REQUEST_ID_HEADER,
    SCORE_PATH,
    ServiceUnavailable,
    score_transaction,
)
from serving.security import API_KEY_HEADER, is_admin, require_admin

_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True}
_BOOLEANS |= {"false": False, "0": False, "no": False, "off": False}
_BODY_MODELS: tuple[type[BaseModel], ...] = (Transaction, TransactionBatch, Feedback, RoutingConfig)
#: Where the docs pages' Swagger UI, ReDoc and icon are served from, and the files behind it:
#: the copies the fastapi-offline package ships (Swagger UI 5, which reads OpenAPI 3.1).
DOCS_ASSETS_PATH = "/docs/assets"
_DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
#: What a docs page may load, enforced by the browser: this origin only. ReDoc's sidebar has
#: its maker's logo built in, fetched from their CDN; with this policy it is never asked for.
#: Inline code is the page's own start-up script and the UIs' styles; ReDoc searches in a
#: worker it makes from a blob.
_DOCS_POLICY = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:"
}


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


def _body(model: type[BaseModel], *, explain: bool = False) -> dict[str, Any]:
    """OpenAPI for a body (and ``explain``) that the endpoint parses itself.

    FastAPI's parameter machinery costs about a tenth of a scoring request, so the hot
    endpoints read their inputs directly and declare them here instead.
    """
    extra: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {
                JSON_MEDIA_TYPE: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
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
    runtime: Runtime = request.app.state.runtime  # Starlette's state holds Any
    return runtime


#: Declared by hand: a FastAPI header parameter would cost dependency solving per request.
_OPTIONAL_ADMIN_KEY = {
    "name": API_KEY_HEADER,
    "in": "header",
    "required": False,
    "description": "The admin key: with it the routing includes its salt.",
    "schema": {"type": "string"},
}


def routes() -> APIRouter:
    """Every endpoint of the API; `serving.app` includes them in the application."""
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
        answer = await score_transaction(_runtime(request), tx, _explain(request))
        return json_response(answer, headers={REQUEST_ID_HEADER: answer["request_id"]})

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
        results = [await score_transaction(runtime, tx, explain) for tx in batch.transactions]
        return json_response({"results": results})

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
        return json_response(view)

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
        return json_response({"models": _model_infos(snapshot), "changed": changed})

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


# --- OpenAPI -------------------------------------------------------------------------------


def openapi_document(app: FastAPI) -> dict[str, Any]:
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


def add_docs_pages(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc, with every file they load served by the app itself.

    FastAPI's own pages make the browser fetch Swagger UI, ReDoc and fonts from public
    hosts: a request the project never makes, and a blank page offline. The app must be
    built with ``docs_url=None, redoc_url=None`` so these are the only ones. Each page also
    tells the browser to load nothing from anywhere else (`_DOCS_POLICY`).
    """
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=_DOCS_ASSETS_DIR), name="docs-assets")
    app.add_route("/docs", _swagger_ui, include_in_schema=False)
    app.add_route("/redoc", _redoc, include_in_schema=False)


def _docs_urls(request: Request) -> tuple[str, str]:
    """The OpenAPI document's URL and the assets' prefix, under a proxy's root path."""
    root = request.scope.get("root_path", "").rstrip("/")
    return f"{root}{request.app.openapi_url}", f"{root}{DOCS_ASSETS_PATH}"


async def _swagger_ui(request: Request) -> HTMLResponse:
    openapi_url, assets = _docs_urls(request)
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{assets}/swagger-ui-bundle.js",
        swagger_css_url=f"{assets}/swagger-ui.css",
        swagger_favicon_url=f"{assets}/favicon.png",
    )
    page.headers.update(_DOCS_POLICY)
    return page


async def _redoc(request: Request) -> HTMLResponse:
    openapi_url, assets = _docs_urls(request)
    page = get_redoc_html(
        openapi_url=openapi_url,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{assets}/redoc.standalone.js",
        redoc_favicon_url=f"{assets}/favicon.png",
        with_google_fonts=False,
    )
    page.headers.update(_DOCS_POLICY)
    return page
