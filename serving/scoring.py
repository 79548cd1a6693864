"""One transaction's answer, the same whichever face of ``POST /v1/score`` receives it.

The FastAPI route (`serving.routes`) and the fast path (`serving.fast_path`) both call
`score_transaction` and both turn its failures into answers with `http_problem`, so a plain
score and one that went through FastAPI's layers cannot answer differently. The constants
both faces read (the path, the body limit, the request-id header, the error text) are here
for the same reason: neither face imports the other.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np
from fastapi import HTTPException, status

from fraudops.features.store_types import (
    OnlineStoreUnavailable,
    TransactionConflict,
)
from fraudops.features.store_types import Transaction as StoreTransaction
from fraudops.logs.records import PredictionRecord
from serving.loaded_model import BIAS, LoadedModel
from serving.runtime import LogUnavailable, Runtime, Snapshot
from serving.schemas import TOP_CONTRIBUTIONS, Transaction
from serving.shadow import ShadowJob

#: The largest body accepted: a full batch of transactions fits about four times over.
MAX_BODY_BYTES = 64 * 1024
REQUEST_ID_HEADER = "X-Request-ID"
SCORE_PATH = "/v1/score"
INTERNAL_ERROR = "internal error; the server log has the details"
JSON_MEDIA_TYPE = "application/json"


class ServiceUnavailable(Exception):
    """A dependency the request needs is away: answer 503 with the reason."""


def http_problem(error: HTTPException | ServiceUnavailable) -> tuple[int, str]:
    """The status and detail of a failure, as the route's handlers and the fast path answer."""
    if isinstance(error, ServiceUnavailable):
        return status.HTTP_503_SERVICE_UNAVAILABLE, str(error)
    return error.status_code, str(error.detail)


async def score_transaction(runtime: Runtime, tx: Transaction, explain: bool) -> dict[str, Any]:
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
