"""Model loading for serving against a real MLflow registry (embedded SQLite, and a real server).

Models are trained, logged and registered exactly as the training flow does it
(`fraudops.tracking.runs.log_training_run`, `fraudops.tracking.registry.register`), on a small
simulated stream with small hyper-parameters.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from fraudops.config import CandidateGrid, Params, Settings, SimulateParams, TrainParams
from fraudops.data.datasets import write_raw
from fraudops.data.simulate import simulate
from fraudops.local.servers import HOST, MlflowServer, free_port
from fraudops.modeling import steps
from fraudops.modeling.candidates import Model, inputs
from fraudops.modeling.tree_ensemble import FlatTreeEnsemble
from fraudops.tracking import runs
from fraudops.tracking.registry import CHALLENGER, CHAMPION, configure_mlflow, promote, register
from serving.loaded_model import BIAS, EstimatorSource, LoadedModel
from serving.model_cache import ModelCache
from serving.models import ModelLoadError, ModelSet

SMALL_MODELS = {
    "xgboost": {"n_estimators": 20, "max_depth": 3},
    "xgboost_deeper": {"n_estimators": 30, "max_depth": 4},
    "logistic_regression": {"max_iter": 300},
    "random_forest": {"n_estimators": 10, "max_depth": 6},
}


@dataclass(frozen=True)
class Trained:
    """A training run as the flow logs it, and test rows to score."""

    result: steps.TrainingResult
    logged: runs.LoggedRun
    rows: np.ndarray

    @property
    def model(self) -> Model:
        """The estimator as training fitted it."""
        return self.result.selection.model

    def probabilities(self) -> np.ndarray:
        return self.model.predict_proba(self.rows)[:, 1]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models-home")


@pytest.fixture(scope="module")
def source(home: Path) -> steps.DataSource:
    raw_dir = home / "raw"
    write_raw(simulate(SimulateParams(customers=300, terminals=600, days=35, seed=1)), raw_dir)
    return steps.DataSource(raw_dir, steps.UNTRACKED, steps.data_fingerprint(raw_dir))


def train_and_log(source: steps.DataSource, kind: str) -> Trained:
    """Train one small candidate and log it to the active MLflow experiment."""
    family = kind.removesuffix("_deeper")
    grid = {family: CandidateGrid(fixed=SMALL_MODELS[kind])}
    params = Params(train=TrainParams(validation_folds=1, n_jobs=1, candidates=grid))
    result = steps.train_bare(source, params)
    rows = inputs(result.selection.split.test, result.features)[:500]
    return Trained(result, runs.log_training_run(result), rows)


@pytest.fixture(scope="module")
def embedded(home: Path) -> Settings:
    """The embedded SQLite registry every test here shares (each under its own model name)."""
    return Settings(home=home, model_cache_dir=home / "unused-cache")


@pytest.fixture(scope="module")
def trained(embedded: Settings, source: steps.DataSource) -> dict[str, Trained]:
    configure_mlflow(embedded)
    return {kind: train_and_log(source, kind) for kind in SMALL_MODELS}


@pytest.fixture
def settings(embedded: Settings, tmp_path: Path) -> Settings:
    """The embedded registry under a fresh model name, with a fresh model cache."""
    name = f"fraud-detector-{uuid.uuid4().hex[:8]}"
    return embedded.model_copy(update={"model_name": name, "model_cache_dir": tmp_path / "cache"})


def register_run(settings: Settings, run: Trained) -> str:
    client = configure_mlflow(settings)
    return str(register(client, run.logged.model_uri, settings.model_name, run.logged.tags).version)


def unreachable(settings: Settings) -> Settings:
    """The same settings aimed at a port nothing listens on: a registry that is down."""
    return settings.model_copy(update={"mlflow_tracking_uri": f"http://{HOST}:{free_port()}"})


# --- loading and scoring --------------------------------------------------------------------


def test_a_booster_the_flat_walk_disagrees_with_is_scored_by_the_booster(
    trained: dict[str, Trained], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A disagreement cannot be caused with a real model (they agree bit for bit), so the
    check's answer is forced; what is tested is that serving then trusts the booster."""
    run = trained["xgboost"]
    booster = run.model.get_booster()
    monkeypatch.setattr(FlatTreeEnsemble, "agreement_error", lambda *_: 1e-3)
    features = tuple(run.result.features)
    model = LoadedModel(
        "m", "7", CHAMPION, None, "xgboost", 0.5, features, EstimatorSource.of(booster)
    )
    assert model.flat_trees is None
    assert "flat trees differ from the booster" in caplog.text
    np.testing.assert_array_equal(model.scores(run.rows), booster.inplace_predict(run.rows))


@pytest.mark.parametrize("kind", ["xgboost", "logistic_regression", "random_forest"])
def test_a_model_loads_by_alias_and_scores_like_its_estimator(
    settings: Settings, trained: dict[str, Trained], kind: str
) -> None:
    run = trained[kind]
    version = register_run(settings, run)
    models = ModelSet(settings)
    snapshot = models.load()
    champion = snapshot[CHAMPION]
    assert (champion.name, champion.version, champion.alias) == (
        settings.model_name,
        version,
        CHAMPION,
    )
    assert champion.run_id == run.logged.run_id
    assert champion.family == run.result.selection.candidate.family
    assert champion.threshold == run.result.selection.threshold
    assert champion.feature_names == tuple(run.result.features)
    assert not champion.from_cache
    # XGBoost is scored by walking its trees in numpy: still the estimator's scores exactly.
    assert (champion.flat_trees is not None) == (kind == "xgboost")
    np.testing.assert_array_equal(champion.scores(run.rows), run.probabilities())
    # One row at a time, as serving calls it (BLAS may round a batch differently).
    one_by_one = [champion.score(row) for row in run.rows[:50]]
    one_row_each = [run.model.predict_proba(row.reshape(1, -1))[0, 1] for row in run.rows[:50]]
    np.testing.assert_array_equal(one_by_one, one_row_each)
    assert champion.decide(champion.threshold)
    assert not champion.decide(float(np.nextafter(champion.threshold, 0)))
    # The first version is champion and challenger: one estimator serves both.
    assert snapshot[CHALLENGER].estimator is champion.estimator
    status = models.status()
    assert status.loaded == {CHAMPION: version, CHALLENGER: version}
    assert status.registry_reachable and status.last_error is None and not status.missing


def test_with_the_flat_walk_switched_off_the_booster_scores(
    settings: Settings, trained: dict[str, Trained]
) -> None:
    run = trained["xgboost"]
    register_run(settings, run)
    booster_only = settings.model_copy(update={"serve_flat_trees": False})
    champion = ModelSet(booster_only).load()[CHAMPION]
    assert champion.flat_trees is None
    np.testing.assert_array_equal(champion.scores(run.rows), run.probabilities())


def test_features_become_a_row_in_the_models_own_order(
    settings: Settings, trained: dict[str, Trained]
) -> None:
    register_run(settings, trained["xgboost"])
    champion = ModelSet(settings).load()[CHAMPION]
    features = dict(zip(reversed(champion.feature_names), range(15), strict=True))
    row = champion.row(features)
    assert row.dtype == np.float64
    assert row.tolist() == [features[name] for name in champion.feature_names]
    with pytest.raises(KeyError, match="tx_amount"):
        champion.row({})


@pytest.mark.parametrize("kind", ["xgboost", "logistic_regression", "random_forest"])
def test_contributions_add_up_to_the_score(
    settings: Settings, trained: dict[str, Trained], kind: str
) -> None:
    run = trained[kind]
    register_run(settings, run)
    champion = ModelSet(settings).load()[CHAMPION]
    for row in run.rows[:20]:
        contributions = champion.contributions(row)
        assert list(contributions) == [*champion.feature_names, BIAS]
        total = sum(contributions.values())
        assert total == pytest.approx(margin_or_probability(champion, row), abs=1e-5)
    assert any(abs(value) > 0 for value in contributions.values())


def margin_or_probability(model: LoadedModel, row: np.ndarray) -> float:
    """The score on the model's contribution scale, straight from the estimator."""
    x = row.reshape(1, -1)
    if model.contribution_scale == "probability":
        return model.score(row)
    if isinstance(model.estimator, xgb.Booster):
        return float(model.estimator.predict(xgb.DMatrix(x), output_margin=True)[0])
    return float(model.estimator.decision_function(x)[0])


def test_with_no_model_registered_every_alias_is_missing(settings: Settings) -> None:
    models = ModelSet(settings)
    assert not models.load().models
    status = models.status()
    assert status.missing == (CHAMPION, CHALLENGER)
    assert status.registry_reachable and status.last_error is None


# --- hot reload -----------------------------------------------------------------------------


def test_a_promotion_swaps_models_and_old_snapshots_keep_theirs(
    settings: Settings, trained: dict[str, Trained]
) -> None:
    first, second = trained["xgboost"], trained["xgboost_deeper"]
    register_run(settings, first)
    models = ModelSet(settings)
    before = models.load()

    new_version = register_run(settings, second)  # becomes the challenger only
    challenged = models.refresh()
    assert challenged[CHAMPION] is before[CHAMPION]  # unchanged alias: not reloaded
    assert challenged[CHALLENGER].version == new_version

    promote(configure_mlflow(settings), settings.model_name, new_version, "test")
    after = models.refresh()
    assert models.snapshot is after
    assert after[CHAMPION].version == new_version
    assert after[CHAMPION].estimator is challenged[CHALLENGER].estimator
    # A request that took the old snapshot still scores with the old champion.
    np.testing.assert_array_equal(before[CHAMPION].scores(first.rows), first.probabilities())
    np.testing.assert_array_equal(
        after[CHAMPION].scores(first.rows), second.model.predict_proba(first.rows)[:, 1]
    )
    assert models.refresh() is after  # nothing changed: nothing published
    cached = sorted(
        path.name for path in (settings.model_cache / settings.model_name / CHAMPION).iterdir()
    )
    assert cached == ["1", "2", "latest"]


def test_the_poller_picks_up_a_promotion(settings: Settings, trained: dict[str, Trained]) -> None:
    register_run(settings, trained["xgboost"])
    new_version = register_run(settings, trained["logistic_regression"])
    models = ModelSet(settings)
    models.load()
    models.start_polling(interval_s=0.2)
    try:
        promote(configure_mlflow(settings), settings.model_name, new_version, "test")
        deadline = time.monotonic() + 20
        while models.snapshot[CHAMPION].version != new_version and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        models.stop()
    assert models.snapshot[CHAMPION].version == new_version
    assert models.snapshot[CHAMPION].family == "logistic_regression"


# --- the registry away ----------------------------------------------------------------------


def test_with_the_registry_down_at_start_the_cached_models_serve(
    settings: Settings, trained: dict[str, Trained]
) -> None:
    run = trained["random_forest"]
    version = register_run(settings, run)
    ModelSet(settings).load()  # fills the cache

    models = ModelSet(unreachable(settings))
    started = time.monotonic()
    snapshot = models.load()
    assert time.monotonic() - started < 30
    champion = snapshot[CHAMPION]
    assert champion.from_cache and champion.version == version
    assert champion.run_id == run.logged.run_id
    assert champion.threshold == run.result.selection.threshold
    np.testing.assert_array_equal(champion.scores(run.rows), run.probabilities())
    status = models.status()
    assert status.from_cache == (CHAMPION, CHALLENGER)
    assert not status.registry_reachable
    assert "unreachable" in status.last_error


def test_a_restart_scores_from_the_kept_walk_and_loads_the_booster_on_demand(
    settings: Settings, trained: dict[str, Trained]
) -> None:
    """The first load keeps the checked walk beside the cached model; the next one scores
    from it without loading the booster, which comes when an explanation needs it."""
    run = trained["xgboost"]
    register_run(settings, run)
    first = ModelSet(settings).load()[CHAMPION]
    folder = settings.model_cache / settings.model_name / CHAMPION / first.version
    assert ModelCache.kept_walk(folder) is not None

    restarted = ModelSet(settings).load()[CHAMPION]
    assert not restarted.source.loaded
    assert (restarted.threshold, restarted.feature_names) == (first.threshold, first.feature_names)
    np.testing.assert_array_equal(restarted.scores(run.rows), run.probabilities())
    assert not restarted.source.loaded
    assert restarted.contributions(run.rows[0]) == first.contributions(run.rows[0])
    assert restarted.source.loaded

    # With the flat walk switched off the kept walk is not used: the booster scores.
    booster_only = ModelSet(settings.model_copy(update={"serve_flat_trees": False}))
    champion = booster_only.load()[CHAMPION]
    assert champion.flat_trees is None and champion.source.loaded
    np.testing.assert_array_equal(champion.scores(run.rows), run.probabilities())


def test_the_poller_loads_the_estimators_a_kept_walk_left_out(
    settings: Settings, trained: dict[str, Trained]
) -> None:
    register_run(settings, trained["xgboost"])
    ModelSet(settings).load()
    models = ModelSet(settings)
    champion = models.load()[CHAMPION]
    assert not champion.source.loaded
    models.start_polling(interval_s=60)
    try:
        deadline = time.monotonic() + 60
        while not champion.source.loaded and time.monotonic() < deadline:
            time.sleep(0.05)
        assert champion.source.loaded
    finally:
        models.stop()


def test_with_the_registry_down_and_no_cache_nothing_loads(settings: Settings) -> None:
    models = ModelSet(unreachable(settings))
    assert not models.load().models
    assert models.status().missing == (CHAMPION, CHALLENGER)
    assert models.status().last_error_at is not None


class Relay:
    """A TCP relay in front of a real server; cutting it takes the server away for real."""

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.listener = socket.create_server((HOST, port))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((HOST, self.target_port))
            self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def cut(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def relay(mlflow_server: MlflowServer) -> Iterator[Relay]:
    opened = Relay(mlflow_server.port)
    yield opened
    opened.cut()


@pytest.mark.services
@pytest.mark.slow
def test_with_the_server_down_during_a_refresh_the_loaded_models_stay(
    mlflow_server: MlflowServer,
    mlflow_settings: Settings,
    relay: Relay,
    source: steps.DataSource,
    tmp_path: Path,
) -> None:
    configure_mlflow(mlflow_settings)
    run = train_and_log(source, "xgboost")
    version = register_run(mlflow_settings, run)
    through_relay = mlflow_settings.model_copy(
        update={
            "mlflow_tracking_uri": f"http://{HOST}:{relay.port}",
            "model_cache_dir": tmp_path / "cache",
        }
    )
    models = ModelSet(through_relay)
    loaded = models.load()
    assert loaded[CHAMPION].version == version and not loaded[CHAMPION].from_cache
    np.testing.assert_array_equal(loaded[CHAMPION].scores(run.rows), run.probabilities())

    relay.cut()
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="unreachable"):
        models.refresh()
    assert time.monotonic() - started < 30
    assert models.snapshot is loaded
    status = models.status()
    assert status.last_error and not status.registry_reachable

    back = Relay(mlflow_server.port, port=relay.port)
    try:
        assert models.refresh() is loaded  # same versions: nothing to publish
        assert models.status().registry_reachable
    finally:
        back.cut()
