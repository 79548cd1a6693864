"""Model-level Prometheus series, read from MLflow and the run folders on every scrape.

The service series (requests, latency, shadow) come from the API's own ``/metrics``; what
the *model* is doing — drift per monitoring window, the CBPE estimate against the quality
realised once labels land, retraining events, which version is champion — is recorded by
the flows in MLflow runs, the registry and ``monitoring/reports/<run>/``. This module reads
those records when Prometheus scrapes (a custom ``prometheus_client`` collector), so no
process pushes anything and the series can never disagree with MLflow.

Why an exporter and not Grafana's PostgreSQL datasource: every dashboard then reads one
source (Prometheus), the alert rules can use the model series beside the service ones,
and the numbers come from the records the flows already keep, not from SQL written
against MLflow's internal tables.

The ``flows`` process serves it (``fraudops serve-flows`` with
``FRAUDOPS_FLOWS_METRICS_PORT``), since it runs the monitoring flow and so sees its run
folders. Gauges hold the newest window's values; Prometheus keeps their history, which is
the "over time" of the dashboards. An unreachable MLflow yields
``fraudops_model_source_up 0`` and no stale numbers, never a failed scrape.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from fraudops.config import Settings
from fraudops.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    DECISION_TAG,
    MlflowClient,
    configure_mlflow,
    outage_named,
    version_by_alias,
)
from fraudops.tracking.runs import RUN_TYPE_TAG
from monitoring.reports import DECISION_FILE

logger = logging.getLogger(__name__)

#: What the flows write, named here so this glue does not import the flows (``pipelines``
#: imports ``monitoring``, not the reverse); tests/integration/test_model_exporter.py runs
#: the real flows, so a renamed tag or file fails it. The retraining trigger and the signal
#: a run answered (``pipelines.retraining``), the monitoring decision
#: (``pipelines.monitoring_flow``), and the file written beside a run's reports once its
#: estimate met the realised quality.
TRIGGER_TAG = "fraudops.trigger"
SIGNAL_TAG = "fraudops.signal"
REALISED_FILE = "realised.json"

#: Runs read per kind and scrape: far more than a demo or a year of weekly windows makes.
MAX_RUNS = 5000
PREFIX = "fraudops_model"


@dataclass(frozen=True)
class RunRecord:
    """What the exporter needs of an MLflow run: when, its tags and metrics."""

    start_s: float
    tags: dict[str, str]
    metrics: dict[str, float]


class ModelCollector:
    """Reads the model's records on each ``collect``; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            f"{PREFIX}_source_up", "1 when MLflow answered this scrape; 0: the series are missing."
        )
        try:
            families = list(self._families())
        except Exception as error:  # a scrape reports the outage, it does not fail
            logger.warning("model metrics unavailable: %s", error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        client = configure_mlflow(self.settings)
        experiment = client.get_experiment_by_name(self.settings.experiment_name)
        ids = [experiment.experiment_id] if experiment else []

        def runs(kind: str) -> list[RunRecord]:
            with outage_named(client.tracking_uri):
                return _runs(client, ids, kind) if ids else []

        yield from monitoring_families(runs("monitoring"))
        yield from settled_families(self.settings.monitoring_reports_dir)
        yield from training_families(runs("training"))
        yield from promotion_families(runs("promotion"))
        name = self.settings.model_name
        aliases = {alias: version_by_alias(client, name, alias) for alias in (CHAMPION, CHALLENGER)}
        yield from alias_families({a: v.version for a, v in aliases.items() if v is not None})


def _runs(client: MlflowClient, experiment_ids: list[str], kind: str) -> list[RunRecord]:
    """Finished runs of one ``fraudops.run_type``, newest first."""
    found = client.search_runs(
        experiment_ids,
        filter_string=f"tags.\"{RUN_TYPE_TAG}\" = '{kind}' and attributes.status = 'FINISHED'",
        max_results=MAX_RUNS,
        order_by=["attributes.start_time DESC"],
    )
    return [
        RunRecord(run.info.start_time / 1000, dict(run.data.tags), dict(run.data.metrics))
        for run in found
    ]


def monitoring_families(runs: list[RunRecord]) -> Iterator[Metric]:
    """Counts by signal, and the newest analysed window's drift and CBPE estimate."""
    counted = CounterMetricFamily(
        f"{PREFIX}_monitoring_runs",
        "Monitoring runs recorded in MLflow, by signal.",
        labels=["signal"],
    )
    for signal, count in sorted(Counter(run.tags.get(SIGNAL_TAG, "") for run in runs).items()):
        counted.add_metric([signal], count)
    yield counted
    latest = _gauge("last_monitoring_timestamp_seconds", "Start of the newest monitoring run.")
    if runs:
        latest.add_metric([], runs[0].start_s)
    yield latest
    analysed = next((run for run in runs if "drift.drifted_share" in run.metrics), None)
    share = _gauge("drifted_share", "Share of drifted features in the newest analysed window.")
    score = _gauge("score_drift", "Drift of the model score in the newest analysed window.")
    estimated = _gauge(
        "estimated_quality",
        "CBPE estimate of the newest analysed window, before its labels.",
        ["metric"],
    )
    if analysed is not None:
        share.add_metric([], analysed.metrics["drift.drifted_share"])
        if "drift.score" in analysed.metrics:
            score.add_metric([], analysed.metrics["drift.score"])
        for key, value in sorted(analysed.metrics.items()):
            metric = key.removeprefix("estimated.")
            if metric != key and metric != "expected_frauds":
                estimated.add_metric([metric], value)
    yield from (share, score, estimated)


def settled_families(reports_dir: Path) -> Iterator[Metric]:
    """The newest window whose labels landed: its estimate beside its realised quality."""
    quality = _gauge(
        "settled_quality",
        "Newest window whose labels landed: CBPE estimate (source=cbpe) and realised value "
        "(source=labels).",
        ["metric", "source"],
    )
    within = _gauge(
        "settled_within_band",
        "1 when the realised value lay within the estimate's band (3 sampling errors).",
        ["metric"],
    )
    when = _gauge("settled_window_timestamp_seconds", "End of the newest settled window.")
    folder = _newest_settled(reports_dir)
    if folder is not None:
        checks = json.loads((folder / REALISED_FILE).read_text())
        for check in checks:
            quality.add_metric([check["metric"], "cbpe"], check["estimated"])
            quality.add_metric([check["metric"], "labels"], check["realised"])
            if check.get("within_band") is not None:
                within.add_metric([check["metric"]], float(check["within_band"]))
        decision = json.loads((folder / DECISION_FILE).read_text())
        when.add_metric([], _epoch(decision["timestamp"]))
    yield from (quality, within, when)


def _newest_settled(reports_dir: Path) -> Path | None:
    """Run folders sort by window time (``monitoring.reports.run_name``)."""
    if not reports_dir.is_dir():
        return None
    settled = [path.parent for path in reports_dir.glob(f"*/{REALISED_FILE}")]
    return max(settled, default=None, key=lambda path: path.name)


def _epoch(timestamp: str) -> float:
    """Window times are written without a zone, in UTC (the transactions' clock)."""
    moment = dt.datetime.fromisoformat(timestamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def training_families(runs: list[RunRecord]) -> Iterator[Metric]:
    """Retraining events: training runs that a trigger (event, direct call, person) started."""
    retrainings = [run for run in runs if TRIGGER_TAG in run.tags]
    counted = CounterMetricFamily(
        f"{PREFIX}_retrainings",
        "Retraining runs recorded in MLflow, by trigger and the signal they answered.",
        labels=["trigger", "signal"],
    )
    pairs = Counter((run.tags[TRIGGER_TAG], run.tags.get(SIGNAL_TAG, "")) for run in retrainings)
    for (trigger, signal), count in sorted(pairs.items()):
        counted.add_metric([trigger, signal], count)
    yield counted
    latest = _gauge("last_retraining_timestamp_seconds", "Start of the newest retraining run.")
    if retrainings:
        latest.add_metric([], retrainings[0].start_s)
    yield latest


def promotion_families(runs: list[RunRecord]) -> Iterator[Metric]:
    counted = CounterMetricFamily(
        f"{PREFIX}_promotion_decisions",
        "Promotion gate decisions recorded in MLflow, by outcome.",
        labels=["decision"],
    )
    for decision, count in sorted(Counter(run.tags.get(DECISION_TAG, "") for run in runs).items()):
        counted.add_metric([decision], count)
    yield counted


def alias_families(versions: dict[str, str]) -> Iterator[Metric]:
    """The champion's version as a number (a step on a graph when it changes) and an info
    series per alias."""
    champion = _gauge("champion_version", "Registry version the champion alias names.")
    if CHAMPION in versions:
        champion.add_metric([], float(versions[CHAMPION]))
    info = _gauge("alias_info", "1 for the version each alias names.", ["alias", "version"])
    for alias, version in sorted(versions.items()):
        info.add_metric([alias, str(version)], 1)
    yield from (champion, info)


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=list(labels))


def model_registry(settings: Settings) -> CollectorRegistry:
    """A registry holding only the model collector (no process or platform series)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ModelCollector(settings))
    return registry


def start_exporter(settings: Settings, port: int, host: str) -> WSGIServer:
    """Serve the model series on HOST:PORT from a daemon thread, beside the caller's work.

    Returns the server, whose ``shutdown`` stops it (the process exiting stops it too).
    """
    server, _thread = start_http_server(port, addr=host, registry=model_registry(settings))
    logger.info("model metrics on http://%s:%d/metrics", host, port)
    return server
