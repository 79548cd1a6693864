"""Shadow scoring off the response path.

The request handler only puts a job on a bounded queue (``put_nowait``: never waits) and
returns its answer; a background task scores the job with the shadow model, counts a
disagreement when the shadow's decision differs from the one returned, and logs a row
marked ``is_shadow``. A full queue drops the job and counts it: a slow or broken shadow
model costs shadow rows, never a response or its latency.

The task runs on the server's event loop. The model call is a fraction of a millisecond,
and after each job the task yields, so a backlog cannot hold requests back for longer than
one shadow score.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from fraudops.models import LoadedModel
from fraudops.prediction_log import PredictionLogWriter, PredictionRecord
from serving.metrics import ServingMetrics

logger = logging.getLogger(__name__)


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
            job = await self._queue.get()
            try:
                self._score(job)
            except Exception:
                self._metrics.shadow_failures.inc()
                logger.exception("shadow: scoring request %s failed", job.served.request_id)
            finally:
                self._queue.task_done()
            await asyncio.sleep(0)  # let waiting requests run between two shadow scores

    def _score(self, job: ShadowJob) -> None:
        started = time.perf_counter()
        model, served = job.model, job.served
        score = float(model.score(job.row))
        decision = score >= model.threshold
        shadow = replace(
            served,
            model_name=model.name,
            model_version=model.version,
            model_alias=model.alias,
            score=score,
            decision=decision,
            threshold=model.threshold,
            latency_ms=(time.perf_counter() - started) * 1000,
            is_shadow=True,
        )
        labels = (model.alias, model.version, served.arm)
        self._metrics.child(self._metrics.shadow_scores.labels, *labels).inc()
        if decision != served.decision:
            self._metrics.child(self._metrics.shadow_disagreements.labels, *labels).inc()
        self._writer.log_prediction(shadow)  # a full log drops shadow rows itself, counted
