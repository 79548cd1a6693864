"""Prometheus series of the server, correct with one worker process or several.

Each app gets its own registry, so creating two apps in one process (tests) cannot clash.
With several uvicorn workers, a scrape reaches one of them at random; prometheus_client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set by ``fraudops serve --workers N``
before the workers start) makes every worker write its values to shared files and any
worker answer for all of them.

Label children are looked up once and kept, because ``.labels(...)`` on every request costs
more than the observation itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from fraudops.logs.records import WriterStats

_Child = TypeVar("_Child")

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Buckets for a request path that should take about a millisecond.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class ServingMetrics:
    """Every series the server exports, on a registry of its own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only double the scrape
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "fraudops_requests",
            "HTTP requests by route template and status code.",
            ["endpoint", "status"],
            registry=registry,
        )
        self.scores = Counter(
            "fraudops_scores",
            "Transactions scored (responses), by answering model and A/B arm.",
            ["model", "version", "arm", "fraud"],
            registry=registry,
        )
        self.score_latency = Histogram(
            "fraudops_score_latency_seconds",
            "Time to score one transaction: online features and the model call.",
            ["model", "version", "arm"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.shadow_scores = Counter(
            "fraudops_shadow_scores",
            "Transactions scored in the shadow, by shadow model and A/B arm.",
            ["model", "version", "arm"],
            registry=registry,
        )
        self.shadow_disagreements = Counter(
            "fraudops_shadow_disagreements",
            "Shadow decisions that differ from the decision returned.",
            ["model", "version", "arm"],
            registry=registry,
        )
        self.shadow_dropped = Counter(
            "fraudops_shadow_dropped",
            "Shadow work dropped: queue full ('queue') or log queue full ('log').",
            ["reason"],
            registry=registry,
        )
        self.shadow_failures = Counter(
            "fraudops_shadow_failures",
            "Shadow scores that raised; the response was already sent and is unaffected.",
            registry=registry,
        )
        self.shadow_queue_depth = Gauge(
            "fraudops_shadow_queue_depth",
            "Shadow scores waiting to run.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.log_queue_depth = Gauge(
            "fraudops_prediction_log_queue_depth",
            "Prediction and label rows waiting to be written.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.log_rows = Counter(
            "fraudops_prediction_log_rows",
            "Rows the prediction log stored or refused, by table and outcome.",
            ["kind"],
            registry=registry,
        )
        self.log_backpressure = Counter(
            "fraudops_prediction_log_backpressure",
            "Requests answered 503 because the prediction log could not take their row.",
            registry=registry,
        )
        self.feedback = Counter(
            "fraudops_feedback",
            "Labels received on /v1/feedback, by label.",
            ["label"],
            registry=registry,
        )
        self.model_info = Gauge(
            "fraudops_model_info",
            "1 for each loaded model version; source is 'registry' or 'cache'.",
            ["alias", "name", "version", "source"],
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.reloads = Counter(
            "fraudops_model_reloads",
            "Model set refreshes, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self._children: dict[tuple[Callable[..., Any], tuple[str, ...]], Any] = {}
        self._models_shown: set[tuple[str, str, str, str]] = set()
        self._writer_seen = WriterStats(0, 0, 0, 0, 0)

    def child(self, factory: Callable[..., _Child], *labels: str) -> _Child:
        """The cached child of a labelled metric; ``factory`` is the metric's ``labels``."""
        key = (factory, labels)
        found: _Child | None = self._children.get(key)
        if found is None:
            found = self._children[key] = factory(*labels)
        return found

    def observe_writer(self, stats: WriterStats) -> None:
        """Turn the writer's running totals into counter increments since the last call."""
        seen = self._writer_seen
        increments = {
            "prediction_written": stats.predictions_written - seen.predictions_written,
            "label_written": stats.labels_written - seen.labels_written,
            "rejected": stats.rows_rejected - seen.rows_rejected,
        }
        for kind, amount in increments.items():
            if amount > 0:
                self.log_rows.labels(kind).inc(amount)
        dropped = stats.shadow_dropped - seen.shadow_dropped
        if dropped > 0:
            self.shadow_dropped.labels("log").inc(dropped)
        self.log_queue_depth.set(stats.pending)
        self._writer_seen = stats

    def show_models(self, loaded: list[tuple[str, str, str, str]]) -> None:
        """Mark each (alias, name, version, source) loaded with 1 and those gone with 0.

        Gone ones are set to 0 rather than removed: in multiprocess mode a removed series
        would keep its last value, 1, in the worker's file.
        """
        current = set(loaded)
        for labels in self._models_shown - current:
            self.model_info.labels(*labels).set(0)
        for labels in current:
            self.model_info.labels(*labels).set(1)
        self._models_shown = current

    def exposition(self) -> bytes:
        """The text a scrape returns: this process's registry, or every worker's files."""
        directory = os.environ.get(MULTIPROCESS_ENV)
        if not directory:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, directory)
        return generate_latest(registry)
