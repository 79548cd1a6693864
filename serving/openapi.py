"""The OpenAPI document of serving, and the offline pages that show it (/docs, /redoc).

The hot endpoints parse their bodies and query flags themselves (FastAPI's parameter
machinery costs about a tenth of a scoring request), so FastAPI cannot see those inputs.
They are declared here instead, and their schemas added to the document, so that clients
and the schemathesis run still see the real contract. The pages load their scripts and
styles from the API itself, never from a CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from fraudops.experiments.routing import RoutingConfig
from serving.schemas import (
    Feedback,
    Problem,
    Transaction,
    TransactionBatch,
    ValidationProblem,
)
from serving.scoring import JSON_MEDIA_TYPE, MAX_BODY_BYTES
from serving.security import API_KEY_HEADER

#: The bodies the endpoints parse themselves, whose schemas the document adds.
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


# --- what the endpoints declare --------------------------------------------------------


def body_spec(model: type[BaseModel], *, explain: bool = False) -> dict[str, Any]:
    """OpenAPI for a body (and ``explain``) that the endpoint parses itself."""
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


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers an endpoint documents, one per status code in CODES."""
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


#: Declared by hand: a FastAPI header parameter would cost dependency solving per request.
OPTIONAL_ADMIN_KEY = {
    "name": API_KEY_HEADER,
    "in": "header",
    "required": False,
    "description": "The admin key: with it the routing includes its salt.",
    "schema": {"type": "string"},
}


# --- the document and its pages ------------------------------------------------------------


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
