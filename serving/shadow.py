"""Shadow scoring off the response path.

The request handler only puts a job on a bounded queue (``put_nowait``: never waits) and
returns its answer; a background task scores the job with the shadow model, counts a
disagreement when the shadow's decision differs from the one returned, and logs a row
marked ``is_shadow``. A full queue drops the job and counts it: a slow or broken shadow
model costs shadow rows, never a response or its latency.

The task runs on the server's event loop, in batches: it waits `BATCH_WINDOW_S` after the
first job for others to queue, then scores up to `MAX_BATCH` jobs with one model call per
shadow model and yields. One call for many rows costs a fraction of one call per row, and
the loop is interrupted tens of times a second rather than once per request, so the
requests of a shadowed experiment are answered almost as fast as those of champion only
(``benchmarks/bench_serving.py`` measures it). A job waits at most a window plus a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from fraudops.logs.records import PredictionRecord
from fraudops.logs.writer import PredictionLogWriter
from serving.loaded_model import LoadedModel
from serving.metrics import ServingMetrics

logger = logging.getLogger(__name__)

#: How long the task lets jobs gather after the first one arrives.
BATCH_WINDOW_S = 0.02
#: The most jobs scored before the task yields to requests again.
MAX_BATCH = 64


@dataclass(frozen=True, slots=True)
class ShadowJob:
    """One request to score again: the served row (its copy for the log) and the model.

    The model is the object the router picked when the request arrived, so a reload while
    the job waits cannot make it score with a different version than it was routed to.
    """

    served: PredictionRecord
    row: np.ndarray
    model: LoadedModel


class ShadowScorer:
    """A bounded queue of shadow jobs and the task that works through it."""

    def __init__(self, writer: PredictionLogWriter, metrics: ServingMetrics, capacity: int) -> None:
        self._writer = writer
        self._metrics = metrics
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(maxsize=capacity)
        self._task: asyncio.Task[None] | None = None
        self._queue_full = metrics.shadow_dropped.labels("queue")

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="shadow-scorer")

    def submit(self, job: ShadowJob) -> bool:
        """Queue a job without waiting; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._queue_full.inc()
            return False
        return True

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def drain(self, timeout: float) -> None:
        """Score what is queued (up to ``timeout``), then stop the task.

        Called at shutdown before the prediction log closes, so shadow rows of requests
        already answered still reach the log.
        """
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            logger.warning("shadow: %d jobs left unscored at shutdown", self._queue.qsize())
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _work(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            # Let a batch gather, unless a backlog already holds a full one.
            await asyncio.sleep(BATCH_WINDOW_S if self._queue.qsize() < MAX_BATCH else 0)
            while len(jobs) < MAX_BATCH and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            for model_jobs in _by_model(jobs):
                try:
                    self._score(model_jobs)
                except Exception:
                    self._metrics.shadow_failures.inc(len(model_jobs))
                    logger.exception("shadow: scoring %d requests failed", len(model_jobs))
            for _ in jobs:
                self._queue.task_done()

    def _score(self, jobs: list[ShadowJob]) -> None:
        """Score JOBS, which share one shadow model, in one call, and log a row for each."""
        started = time.perf_counter()
        model = jobs[0].model
        scores = model.scores(np.vstack([job.row for job in jobs])).tolist()
        latency_ms = (time.perf_counter() - started) * 1000 / len(jobs)
        for job, score in zip(jobs, scores, strict=True):
            served = job.served
            decision = score >= model.threshold
            shadow = replace(
                served,
                model_name=model.name,
                model_version=model.version,
                model_alias=model.alias,
                score=score,
                decision=decision,
                threshold=model.threshold,
                latency_ms=latency_ms,
                is_shadow=True,
            )
            labels = (model.alias, model.version, served.arm)
            self._metrics.child(self._metrics.shadow_scores.labels, *labels).inc()
            if decision != served.decision:
                self._metrics.child(self._metrics.shadow_disagreements.labels, *labels).inc()
            self._writer.log_prediction(shadow)  # a full log drops shadow rows itself, counted


def _by_model(jobs: list[ShadowJob]) -> list[list[ShadowJob]]:
    """JOBS grouped by the model object they were routed to, in order of first arrival."""
    groups: dict[int, list[ShadowJob]] = {}
    for job in jobs:
        groups.setdefault(id(job.model), []).append(job)
    return list(groups.values())
