"""What one server process holds while it serves, and how that changes under load.

The request path reads one immutable ``Snapshot`` (models by alias and the routing compiled
for them) and keeps it for the whole request, so a reload or a routing change swaps the
snapshot between requests and a request in flight finishes on the models it started with.

Routing follows Seldon Core 2's rule that an experiment routes only once every model in it
is ready: a policy naming an alias that is not loaded is kept as *configured* while the
*active* policy is champion only, and it becomes active by itself once its models load.

Several worker processes each hold their own snapshot. They converge through files:
``PUT /admin/routing`` saves the live routing file and ``POST /admin/reload`` touches a
reload marker; every worker checks both once a second and follows.

The live policy is runtime state, so it is saved under ``FRAUDOPS_HOME``
(``Settings.live_routing_path``), never over the tracked ``routing.yaml``: that file is the
documented default, in force (and followed when edited) until a live policy exists, and a
checkout stays as committed however serving is driven. Deleting the live file brings the
default back.

A little over 400 lines: the once-a-second follow loop (routing file, reload marker, online
learner) reads and swaps the same snapshot the request path reads, so it stays beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from fraudops.config import Settings, load_params
from fraudops.experiments.routing import (
    CHAMPION,
    Router,
    RoutingConfig,
    RoutingConfigError,
    load_routing,
    save_routing,
)
from fraudops.features.online_store import OnlineStore, open_online_store
from fraudops.features.store_types import OnlineStoreUnavailable
from fraudops.logs.errors import LogBackpressureError, PredictionLogClosedError
from fraudops.logs.records import LabelRecord, PredictionRecord
from fraudops.logs.writer import PredictionLogWriter
from fraudops.modeling.online import ONLINE_ALIAS
from fraudops.tracking.registry import CHALLENGER
from serving.loaded_model import LoadedModel
from serving.metrics import ServingMetrics
from serving.models import ModelSet, ModelSnapshot
from serving.online_shadow import OnlineShadow, shadows_online
from serving.shadow import ShadowScorer

logger = logging.getLogger(__name__)

#: How often each worker looks at the routing file and the reload marker, and updates gauges.
SYNC_INTERVAL_S = 1.0
#: Shadow jobs that may wait; beyond this they are dropped and counted.
SHADOW_QUEUE_SIZE = 10_000
#: How long shutdown waits for queued shadow scores before the log closes.
SHADOW_DRAIN_TIMEOUT_S = 10.0


_Record = TypeVar("_Record", PredictionRecord, LabelRecord)


class LogUnavailable(RuntimeError):
    """The prediction log cannot take a served row: answer 503, never a 200 without a row."""


@dataclass(frozen=True, slots=True)
class RoutingPlan:
    """The configured policy, the one in force, and the aliases that keep them apart."""

    configured: RoutingConfig
    active: RoutingConfig
    router: Router
    missing: tuple[str, ...]

    @classmethod
    def for_models(cls, configured: RoutingConfig, loaded: Mapping[str, object]) -> RoutingPlan:
        missing = tuple(alias for alias in configured.required_aliases if alias not in loaded)
        active = RoutingConfig() if missing else configured
        return cls(configured, active, Router(active), missing)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a request needs to pick and run a model, swapped as one object."""

    models: Mapping[str, LoadedModel]
    routing: RoutingPlan


@dataclass
class _Watched:
    """Modification times of the files other workers use to signal this one.

    ``routing`` pairs the file in force with its time, so switching from the default file
    to a newly saved live one counts as a change even if the times happened to match.
    """

    routing: tuple[Path, int | None] | None = None
    reload: int | None = None


class Runtime:
    """The stores, models, routing and background work of one server process."""

    def __init__(self, settings: Settings, metrics: ServingMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.params = load_params(settings.params_path).features
        self.store: OnlineStore | None = None
        self.writer: PredictionLogWriter | None = None
        self.models: ModelSet | None = None
        self.shadow: ShadowScorer | None = None
        self.online: OnlineShadow | None = None
        self._configured = RoutingConfig()
        self._snapshot = Snapshot({}, RoutingPlan.for_models(self._configured, {}))
        self._seen_models: ModelSnapshot | None = None
        self._watched = _Watched()
        self._sync_task: asyncio.Task[None] | None = None
        self.reload_marker = settings.home / "serving" / "reload-requested"

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the stores, load routing and models, and start the background tasks.

        A registry that cannot be reached is not fatal: models come from the disk cache,
        or the server starts without any and ``/ready`` says so.
        """
        self.store = open_online_store(
            self.settings.feature_store_url,
            self.params,
            namespace=self.settings.online_store_namespace,
        )
        self.writer = PredictionLogWriter.from_settings(self.settings)
        source = self._routing_file()
        self._configured = load_routing(source)
        self._watched.routing = (source, _mtime(source))
        self._watched.reload = _mtime(self.reload_marker)
        self.models = ModelSet(self.settings, self._wanted_aliases())
        await asyncio.to_thread(self.models.load)
        self.models.start_polling()
        await self._follow_online(self._configured)
        self.current()
        self.shadow = ShadowScorer(self.writer, self.metrics, SHADOW_QUEUE_SIZE)
        self.shadow.start()
        self._sync_task = asyncio.create_task(self._sync_forever(), name="serving-sync")

    def _routing_file(self) -> Path:
        """The live policy once one was saved, else the default one (``routing.yaml``)."""
        live = self.settings.live_routing_path
        return live if live.exists() else self.settings.routing_path

    def _wanted_aliases(self) -> tuple[str, ...]:
        """Champion, challenger and whatever else of the registry the routing file names."""
        named = (alias for alias in self._configured.required_aliases if alias != ONLINE_ALIAS)
        return tuple(dict.fromkeys((CHAMPION, CHALLENGER, *named)))

    async def stop(self) -> None:
        """Finish shadow work, then store every queued log row, then release the rest.

        Shadow rows go to the log, so the shadow queue drains before the log closes.
        """
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        if self.shadow is not None:
            await self.shadow.drain(SHADOW_DRAIN_TIMEOUT_S)
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)
        if self.models is not None:
            await asyncio.to_thread(self.models.stop)
        if self.store is not None:
            self.store.close()

    # --- the snapshot ---------------------------------------------------------------------

    def current(self) -> Snapshot:
        """The snapshot to serve this request with; rebuilt only when the models changed."""
        if self.models is not None and self.models.snapshot is not self._seen_models:
            self._seen_models = self.models.snapshot
            self._rebuild(self._seen_models.models, self._configured)
        return self._snapshot

    def _rebuild(self, models: Mapping[str, LoadedModel], configured: RoutingConfig) -> None:
        """Route CONFIGURED over MODELS, the online learner among them only while shadowed."""
        routed = {alias: model for alias, model in models.items() if alias != ONLINE_ALIAS}
        if self.online is not None and shadows_online(configured):
            routed[ONLINE_ALIAS] = self.online.model
        plan = RoutingPlan.for_models(configured, routed)
        if plan.missing and plan.missing != self._snapshot.routing.missing:
            logger.warning(
                "routing: %s not loaded; serving champion only until they are",
                ", ".join(plan.missing),
            )
        self._configured = configured
        self._snapshot = Snapshot(routed, plan)
        self.metrics.show_models([(m.alias, m.name, m.version, source(m)) for m in routed.values()])

    async def reload_models(self) -> list[str]:
        """Ask the registry for every alias now and tell the other workers to do the same.

        Returns the aliases whose version changed; raises `ModelLoadError` (the loaded
        models stay) when the registry cannot be reached.
        """
        assert self.models is not None
        before = self.current().models
        try:
            await asyncio.to_thread(self.models.refresh)
        except Exception:
            self.metrics.reloads.labels("failed").inc()
            raise
        self.metrics.reloads.labels("ok").inc()
        after = self.current().models
        self._signal_other_workers()
        return sorted(
            alias
            for alias in {*before, *after}
            if getattr(before.get(alias), "version", None)
            != getattr(after.get(alias), "version", None)
        )

    async def prepare_routing(self, config: RoutingConfig) -> Mapping[str, LoadedModel]:
        """The models CONFIG may route to: the loaded ones, and the online learner when
        CONFIG shadows it (started first, off the event loop)."""
        await self._follow_online(config)
        online = self.online
        current = self.current().models
        models = {alias: model for alias, model in current.items() if alias != ONLINE_ALIAS}
        if online is not None and shadows_online(config):
            models[ONLINE_ALIAS] = online.model
        return models

    async def _follow_online(self, config: RoutingConfig) -> None:
        """Start the online learner when CONFIG shadows it and this process has none yet.

        It loads river and the saved state, so it runs in a thread; if it fails, routing
        waits for the alias as for any model that did not load.
        """
        if self.online is not None or not shadows_online(config):
            return
        assert self.writer is not None
        try:
            self.online = await asyncio.to_thread(
                OnlineShadow.open, self.settings, self.writer.engine
            )
        except Exception:
            logger.exception("online learner: it does not start; routing waits for it")

    def set_routing(self, config: RoutingConfig) -> RoutingPlan:
        """Make CONFIG the policy of this worker and, through the live file, of the others.

        The caller has checked that its aliases are loaded; the file is written first, so a
        policy in force is always one that survives a restart.
        """
        live = self.settings.live_routing_path
        save_routing(config, live)
        self._watched.routing = (live, _mtime(live))
        self._rebuild(self.current().models, config)
        return self._snapshot.routing

    def _signal_other_workers(self) -> None:
        self.reload_marker.parent.mkdir(parents=True, exist_ok=True)
        self.reload_marker.touch()
        self._watched.reload = _mtime(self.reload_marker)

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            try:
                await self._sync_once()
            except Exception:  # a bad file or a registry hiccup must not stop the loop
                logger.exception("serving: periodic sync failed")

    async def _sync_once(self) -> None:
        assert self.writer is not None and self.shadow is not None
        self.metrics.observe_writer(self.writer.stats())
        self.metrics.shadow_queue_depth.set(self.shadow.depth)
        source = self._routing_file()
        routing_stamp = (source, _mtime(source))
        if routing_stamp != self._watched.routing:
            self._watched.routing = routing_stamp
            try:
                configured = load_routing(source)
            except RoutingConfigError as error:
                logger.error("routing: keeping the current policy: %s", error)
            else:
                await self._follow_online(configured)
                self._rebuild(self.current().models, configured)
        await self._sync_online()
        reload_mtime = _mtime(self.reload_marker)
        if reload_mtime != self._watched.reload:
            self._watched.reload = reload_mtime
            await self.reload_models_quietly()

    async def _sync_online(self) -> None:
        """Let the online learner learn and follow its state; let it go once unrouted."""
        if self.online is None:
            return
        if not shadows_online(self._configured):
            self.online = None  # its state stays on disk for the next policy that names it
        elif await asyncio.to_thread(self.online.sync):
            self._rebuild(self.current().models, self._configured)

    async def reload_models_quietly(self) -> None:
        assert self.models is not None
        try:
            await asyncio.to_thread(self.models.refresh)
            self.metrics.reloads.labels("ok").inc()
        except Exception as error:
            self.metrics.reloads.labels("failed").inc()
            logger.warning("models: reload failed, keeping the loaded ones: %s", error)
        self.current()

    # --- logging from the event loop ------------------------------------------------------

    async def log_served(self, record: PredictionRecord) -> None:
        """Hand the row of a 200 to the log without blocking the loop; else LogUnavailable.

        The first try never waits. Only when the queue is full does the row wait for room,
        in a worker thread, up to the writer's enqueue timeout.
        """
        assert self.writer is not None
        await self._hand_over(
            self.writer.log_prediction, record, "prediction log", self.metrics.log_backpressure.inc
        )

    async def log_label(self, record: LabelRecord) -> None:
        """Hand a label to the log as ``log_served`` hands a row; else LogUnavailable."""
        assert self.writer is not None
        await self._hand_over(self.writer.log_label, record, "label log")

    async def _hand_over(
        self,
        put: Callable[[_Record, float | None], object],
        record: _Record,
        log: str,
        on_unavailable: Callable[[], None] = lambda: None,
    ) -> None:
        """PUT RECORD without waiting; if the queue is full, wait for room off the loop."""
        try:
            put(record, 0)
            return
        except LogBackpressureError:
            pass
        except PredictionLogClosedError as error:
            raise LogUnavailable(f"the {log} is closed: the server is stopping") from error
        try:
            await asyncio.to_thread(put, record, None)
        except (LogBackpressureError, PredictionLogClosedError) as error:
            on_unavailable()
            raise LogUnavailable(f"{log} unavailable: {error}") from error

    # --- readiness ------------------------------------------------------------------------

    async def readiness(self) -> tuple[dict[str, bool], list[str]]:
        """Each check by name, and a reason for every failed one."""
        snapshot = self.current()
        checks: dict[str, bool] = {}
        problems: list[str] = []
        checks["champion_loaded"] = CHAMPION in snapshot.models
        if not checks["champion_loaded"]:
            problems.append("no champion model loaded (registry empty or unreachable, no cache)")
        checks["routing_active"] = not snapshot.routing.missing
        if snapshot.routing.missing:
            problems.append(
                "routing waits for " + ", ".join(snapshot.routing.missing) + "; champion only"
            )
        checks["online_store"] = await self._store_answers(problems)
        checks["prediction_log"] = await self._log_answers(problems)
        return checks, problems

    async def _store_answers(self, problems: list[str]) -> bool:
        assert self.store is not None
        try:
            await asyncio.to_thread(self.store.ping)
        except OnlineStoreUnavailable as error:
            problems.append(str(error))
            return False
        return True

    async def _log_answers(self, problems: list[str]) -> bool:
        assert self.writer is not None
        try:
            await asyncio.to_thread(_ping_engine, self.writer)
        except Exception as error:
            problems.append(f"prediction log: {type(error).__name__}: {error}")
            return False
        return True


def _ping_engine(writer: PredictionLogWriter) -> None:
    from sqlalchemy import text

    with writer.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def source(model: LoadedModel) -> str:
    """Where a loaded model came from, as /ready, /v1/models and the metrics name it."""
    return "cache" if model.from_cache else "registry"


def _mtime(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None
