"""Serving's models: loaded by alias from the registry, held in memory, swapped as a whole.

Public API (what serving calls)::

    models = ModelSet(settings)              # aliases champion and challenger
    models.load()                            # at start; the disk cache stands in for an
                                             # unreachable registry (never raises for that)
    models.start_polling()                   # refresh every settings.model_poll_interval_s
    snapshot = models.snapshot               # immutable: hold it for the whole request
    model = snapshot.get("champion")         # LoadedModel, or None when not loaded
    row = model.row(features)                # numpy row in the model's own input order
    score = model.score(row); alert = model.decide(score)
    model.contributions(row)                 # ?explain=true
    models.refresh()                         # POST /admin/reload (blocking: run it off the
                                             # event loop); raises ModelLoadError, keeps models
    models.status()                          # for /ready and /v1/models
    models.stop()

Each model is a `serving.loaded_model.LoadedModel`; how it scores is described there.

A refresh builds a new `ModelSnapshot` and publishes it with one reference assignment, so a
request that took the old snapshot finishes on the old models while new requests see the
new ones, and a request never mixes the two. Only aliases whose version changed are loaded
again. A refresh that fails anywhere publishes nothing: the old snapshot stays and the error
is kept for `status`.

Every model is downloaded into ``<model cache>/<name>/<alias>/<version>/`` with a manifest
before it is loaded, and ``<alias>/latest`` names the last version that loaded. When the
registry cannot be reached at start, those cached versions serve, marked ``from_cache``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from fraudops.config import Settings
from fraudops.tracking.logged_models import download_version, load_logged_model
from fraudops.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    MlflowClient,
    configure_mlflow,
    outage_named,
    version_by_alias,
)
from serving.loaded_model import EstimatorSource, LoadedModel
from serving.model_cache import MANIFEST_FILE, MODEL_FOLDER, ModelCache, WalkCard

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """Models could not be refreshed from the registry; the loaded ones stay in service."""


# --- a consistent set of models -------------------------------------------------------------


@dataclass(frozen=True)
class ModelSnapshot:
    """The models by alias at one moment; never changes once published."""

    models: Mapping[str, LoadedModel] = field(default_factory=lambda: MappingProxyType({}))
    published_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def get(self, alias: str) -> LoadedModel | None:
        return self.models.get(alias)

    def __getitem__(self, alias: str) -> LoadedModel:
        return self.models[alias]

    def __contains__(self, alias: object) -> bool:
        return alias in self.models


@dataclass(frozen=True)
class ModelSetStatus:
    """What ``/ready`` and ``/v1/models`` report about model loading."""

    model_name: str
    registry_uri: str
    wanted: tuple[str, ...]
    loaded: dict[str, str]  # alias -> version
    from_cache: tuple[str, ...]
    missing: tuple[str, ...]
    last_refresh_at: dt.datetime | None
    last_error: str | None
    last_error_at: dt.datetime | None

    @property
    def registry_reachable(self) -> bool:
        """Whether the latest attempt to reach the registry succeeded."""
        if self.last_error_at is None:
            return self.last_refresh_at is not None
        return self.last_refresh_at is not None and self.last_refresh_at > self.last_error_at


class ModelSet:
    """The models serving uses, by alias, refreshed from the registry and published whole."""

    def __init__(self, settings: Settings, aliases: Sequence[str] = (CHAMPION, CHALLENGER)) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.aliases = tuple(aliases)
        self.cache = ModelCache(settings.model_cache / self.name)
        self._snapshot = ModelSnapshot()
        self._client: MlflowClient | None = None
        self._refresh_lock = threading.Lock()
        self._last_refresh_at: dt.datetime | None = None
        self._last_error: str | None = None
        self._last_error_at: dt.datetime | None = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def snapshot(self) -> ModelSnapshot:
        """The current models; take it once per request and use only it."""
        return self._snapshot

    def load(self) -> ModelSnapshot:
        """Load every alias from the registry, or, if that fails, from the disk cache.

        Failing to reach the registry is not raised: it is in `status`, and the poller
        keeps trying. Aliases found in neither place are listed as missing.
        """
        try:
            return self.refresh()
        except ModelLoadError:
            cached = {alias: model for alias in self.aliases if (model := self._cached(alias))}
            logger.warning("serving %s from the model cache", sorted(cached) or "nothing")
            self._publish({**cached, **self._snapshot.models})
            return self._snapshot

    def refresh(self) -> ModelSnapshot:
        """Ask the registry which version each alias names; load the changed ones; publish.

        Raises `ModelLoadError` when anything fails, after recording it; the previous
        snapshot then stays in service untouched.
        """
        with self._refresh_lock:
            try:
                models = self._resolve()
            except Exception as error:  # Whatever broke, the old models keep serving.
                self._client = None
                self._last_error = f"{type(error).__name__}: {error}"
                self._last_error_at = dt.datetime.now(dt.UTC)
                raise ModelLoadError(f"could not refresh models: {self._last_error}") from error
            self._last_refresh_at = dt.datetime.now(dt.UTC)
            # LoadedModel compares by identity: any reloaded alias makes the sets differ.
            if models != dict(self._snapshot.models):
                self._publish(models)
            return self._snapshot

    def start_polling(self, interval_s: float | None = None) -> None:
        """Refresh in a background thread every INTERVAL_S (default: the setting)."""
        if self._poller is not None and self._poller.is_alive():
            return
        interval = interval_s or self.settings.model_poll_interval_s
        self._stop.clear()
        self._poller = threading.Thread(
            target=self._poll, args=(interval,), name="model-poller", daemon=True
        )
        self._poller.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling; a refresh in progress finishes first (up to TIMEOUT_S)."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout_s)
            self._poller = None

    def status(self) -> ModelSetStatus:
        models = self._snapshot.models
        return ModelSetStatus(
            model_name=self.name,
            registry_uri=self.settings.tracking_uri,
            wanted=self.aliases,
            loaded={alias: model.version for alias, model in models.items()},
            from_cache=tuple(alias for alias, model in models.items() if model.from_cache),
            missing=tuple(alias for alias in self.aliases if alias not in models),
            last_refresh_at=self._last_refresh_at,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
        )

    def _poll(self, interval_s: float) -> None:
        self._load_estimators()
        while not self._stop.wait(interval_s):
            try:
                self.refresh()
            except ModelLoadError as error:
                logger.warning("%s; keeping the loaded models", error)

    def _load_estimators(self) -> None:
        """Load the estimators that models started from a kept walk do not need to score
        (explanations do), off the request path and soon after start."""
        for model in self._snapshot.models.values():
            try:
                model.source.get()
            except Exception:  # It scores without it; an explanation will report the error.
                logger.exception("model version %s: the estimator does not load", model.version)

    def _publish(self, models: Mapping[str, LoadedModel]) -> None:
        # One reference assignment: readers see the old snapshot or the new one, never a mix.
        self._snapshot = ModelSnapshot(MappingProxyType(dict(models)))
        logger.info("serving %s", {alias: model.version for alias, model in sorted(models.items())})

    def _resolve(self) -> dict[str, LoadedModel]:
        """The models each alias should have now, reusing loaded ones whose version holds.

        An alias the registry no longer has keeps its loaded model: serving does not drop a
        model because of a registry edit; routing decides what receives traffic.
        """
        if self._client is None:
            self._client = configure_mlflow(self.settings)
        current = self._snapshot.models
        models: dict[str, LoadedModel] = {}
        for alias in self.aliases:
            registered = version_by_alias(self._client, self.name, alias)
            old = current.get(alias)
            if registered is None:
                if old is not None:
                    models[alias] = old
            elif old is not None and old.version == str(registered.version):
                models[alias] = (
                    dataclasses.replace(old, from_cache=False) if old.from_cache else old
                )
            else:
                twins = [*models.values(), *current.values()]
                models[alias] = self._fetch(
                    alias, str(registered.version), registered.run_id, twins
                )
        return models

    def _fetch(
        self, alias: str, version: str, run_id: str | None, twins: Sequence[LoadedModel]
    ) -> LoadedModel:
        """VERSION for ALIAS: cached on disk first, the estimator shared with a twin alias
        that already holds the same version (champion and challenger often do)."""
        uri = self.settings.tracking_uri

        def fetch(target: Path) -> None:
            if (cached := self.cache.any_folder(version)) is not None:
                shutil.copytree(cached / MODEL_FOLDER, target)
                return
            with outage_named(uri):
                download_version(self.name, version, uri, target)

        folder = self.cache.download(alias, version, run_id, fetch)
        twin = next((model for model in twins if model.version == version), None)
        if twin is not None:
            model = dataclasses.replace(twin, alias=alias, from_cache=False)
        else:
            model = _load(folder, self.name, alias, from_cache=False, settings=self.settings)
        self.cache.mark_latest(alias, version)
        return model

    def _cached(self, alias: str) -> LoadedModel | None:
        folder = self.cache.latest(alias)
        if folder is None:
            return None
        try:
            return _load(folder, self.name, alias, from_cache=True, settings=self.settings)
        except Exception:  # A damaged cache entry must not stop the others from loading.
            logger.exception("cached %s model at %s does not load", alias, folder)
            return None


def _load(
    folder: Path, name: str, alias: str, *, from_cache: bool, settings: Settings
) -> LoadedModel:
    """The version in FOLDER; from its checked walk when one was kept (the estimator then
    loads on first use), else from the model itself, keeping the walk for next time."""
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    kept = ModelCache.kept_walk(folder) if settings.serve_flat_trees else None
    if kept is not None:
        card, trees = kept
        source = EstimatorSource(lambda: load_logged_model(folder / MODEL_FOLDER)[0])
    else:
        estimator, model_card = load_logged_model(folder / MODEL_FOLDER)
        card = WalkCard(model_card.family, float(model_card.threshold), tuple(model_card.features))
        source, trees = EstimatorSource.of(estimator), None
    model = LoadedModel(
        name=name,
        version=manifest["version"],
        alias=alias,
        run_id=manifest.get("run_id"),
        family=card.family,
        threshold=card.threshold,
        feature_names=card.features,
        source=source,
        from_cache=from_cache,
        flat_walk=settings.serve_flat_trees,
        flat_trees=trees,
    )
    if kept is None and model.flat_trees is not None:
        ModelCache.keep_walk(folder, card, model.flat_trees)
    return model
