"""The shadow scorer with real models and a real SQLite log: batches keep each job's model."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import numpy as np
import xgboost as xgb

from fraudops.logs.database import open_prediction_log
from fraudops.logs.readers import read_predictions
from fraudops.logs.records import PredictionRecord
from fraudops.logs.writer import PredictionLogWriter
from serving.loaded_model import EstimatorSource, LoadedModel
from serving.metrics import ServingMetrics
from serving.shadow import MAX_BATCH, ShadowJob, ShadowScorer

FEATURES = ("a", "b", "c")


def _model(version: str, depth: int) -> LoadedModel:
    rng = np.random.default_rng(int(version))
    x = rng.normal(size=(500, len(FEATURES)))
    y = (x[:, 0] + rng.normal(scale=0.5, size=500) > 0).astype(int)
    booster = xgb.XGBClassifier(n_estimators=10, max_depth=depth).fit(x, y).get_booster()
    return LoadedModel(
        "m", version, "challenger", None, "xgboost", 0.5, FEATURES, EstimatorSource.of(booster)
    )


def _job(index: int, row: np.ndarray, model: LoadedModel) -> ShadowJob:
    served = PredictionRecord(
        request_id=f"request-{index}",
        transaction_id=index,
        tx_datetime=dt.datetime(2018, 6, 1, 12),
        customer_id=index % 7,
        terminal_id=index % 11,
        features=dict(zip(FEATURES, row.tolist(), strict=True)),
        model_name="m",
        model_version="1",
        model_alias="champion",
        arm="champion",
        score=0.5,
        decision=index % 2 == 0,
        threshold=0.5,
        latency_ms=1.0,
    )
    return ShadowJob(served, row, model)


def test_jobs_scored_in_batches_keep_the_model_each_was_routed_to(tmp_path: Path) -> None:
    """A reload between two requests means one batch may hold jobs for two versions."""
    old, new = _model("2", depth=2), _model("3", depth=4)
    rows = np.random.default_rng(0).normal(size=(3 * MAX_BATCH, len(FEATURES)))
    jobs = [_job(i, row, old if i % 3 else new) for i, row in enumerate(rows)]
    engine = open_prediction_log(f"sqlite:///{tmp_path / 'log.db'}")
    metrics = ServingMetrics()

    async def run() -> list[bool]:
        with PredictionLogWriter(engine, id_salt="test") as writer:
            scorer = ShadowScorer(writer, metrics, capacity=len(jobs))
            scorer.start()
            accepted = [scorer.submit(job) for job in jobs]
            await scorer.drain(timeout=30)
        return accepted

    assert all(asyncio.run(run()))
    shadows = read_predictions(engine, rows="all").query("is_shadow").set_index("request_id")
    assert len(shadows) == len(jobs)
    flips = 0
    for job in jobs:
        row = shadows.loc[job.served.request_id]
        expected = job.model.score(job.row)
        assert row["model_version"] == job.model.version
        assert row["score"] == expected  # the batch gives each row its own score exactly
        assert bool(row["decision"]) == (expected >= job.model.threshold)
        flips += bool(row["decision"]) != job.served.decision
    assert flips > 0
    disagreements = sum(
        metrics.registry.get_sample_value(
            "fraudops_shadow_disagreements_total",
            {"model": "challenger", "version": version, "arm": "champion"},
        )
        or 0
        for version in ("2", "3")
    )
    assert disagreements == flips


def test_a_full_queue_drops_the_job_and_counts_it(tmp_path: Path) -> None:
    model = _model("2", depth=2)
    engine = open_prediction_log(f"sqlite:///{tmp_path / 'log.db'}")
    metrics = ServingMetrics()
    row = np.zeros(len(FEATURES))

    async def run() -> list[bool]:
        with PredictionLogWriter(engine, id_salt="test") as writer:
            scorer = ShadowScorer(writer, metrics, capacity=2)  # not started: nothing drains
            return [scorer.submit(_job(i, row, model)) for i in range(3)]

    assert asyncio.run(run()) == [True, True, False]
    dropped = metrics.registry.get_sample_value(
        "fraudops_shadow_dropped_total", {"reason": "queue"}
    )
    assert dropped == 1
