"""The rows serving hands the prediction log, and the writer's counters, as plain values.

Apart from the writer so the request path, shadow scoring and metrics name these types
without importing the writer's thread machinery or SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One model score for one request, as the server knows it; ids are hashed on write.

    ``arm`` is the A/B arm the request was assigned, so a shadow row (``is_shadow``) names
    both the model that scored it (``model_alias``) and the arm whose traffic it shadowed.
    """

    request_id: str
    transaction_id: int
    tx_datetime: dt.datetime
    customer_id: int | str
    terminal_id: int | str
    features: Mapping[str, float]
    model_name: str
    model_version: str
    model_alias: str
    arm: str
    score: float
    decision: bool
    threshold: float
    latency_ms: float
    is_shadow: bool = False
    logged_at: dt.datetime = field(default_factory=_utc_now)


@dataclass(frozen=True, slots=True)
class LabelRecord:
    """A fraud label that arrived for a transaction; later ones supersede earlier ones."""

    transaction_id: int
    label: int
    received_at: dt.datetime = field(default_factory=_utc_now)


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counters for metrics: rows stored, shadow rows dropped, rows refused, rows queued."""

    predictions_written: int
    labels_written: int
    shadow_dropped: int
    rows_rejected: int
    pending: int
