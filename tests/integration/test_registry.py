"""Registry aliases and decisions against a real MLflow server (PostgreSQL) and SQLite."""

from __future__ import annotations

import time

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from sklearn.dummy import DummyClassifier

from fraudops.config import Settings, get_settings
from fraudops.local.servers import free_port
from fraudops.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    DECISION_REASON_TAG,
    DECISION_TAG,
    PREVIOUS_CHAMPION_TAG,
    RegistryError,
    RegistryUnavailable,
    configure_mlflow,
    promote,
    register,
    rollback,
    version_by_alias,
)


def log_tiny_model() -> tuple[str, str]:
    """Log a real (if trivial) model in a new run; return its model URI and run id."""
    with mlflow.start_run() as run:
        model = DummyClassifier(strategy="prior").fit([[0.0], [1.0]], [0, 1])
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    return info.model_uri, run.info.run_id


def aliases_of(client: MlflowClient, name: str) -> dict[str, str]:
    return dict(client.get_registered_model(name).aliases)


def register_two_versions(client: MlflowClient, name: str) -> tuple[ModelVersion, ModelVersion]:
    first_uri, first_run = log_tiny_model()
    first = register(client, first_uri, name, {"fraudops.data_version": "abc"})
    assert sorted(first.aliases) == [CHALLENGER, CHAMPION]
    assert first.run_id == first_run
    assert first.tags["fraudops.data_version"] == "abc"

    second_uri, _ = log_tiny_model()
    second = register(client, second_uri, name)
    assert second.aliases == [CHALLENGER]
    assert aliases_of(client, name) == {CHAMPION: first.version, CHALLENGER: second.version}
    return first, second


def test_first_version_is_champion_later_ones_only_challenger(
    mlflow_settings: Settings, model_name: str
) -> None:
    client = configure_mlflow(mlflow_settings)
    first, second = register_two_versions(client, model_name)
    assert version_by_alias(client, model_name, CHAMPION).version == first.version
    assert version_by_alias(client, model_name, CHALLENGER).version == second.version


def test_promote_then_rollback_round_trip(mlflow_settings: Settings, model_name: str) -> None:
    client = configure_mlflow(mlflow_settings)
    register_two_versions(client, model_name)

    promoted = promote(client, model_name, 2, "challenger not worse", {"challenger_ap": 0.61})
    assert sorted(promoted.aliases) == [CHALLENGER, CHAMPION]
    assert promoted.tags[PREVIOUS_CHAMPION_TAG] == "1"
    assert promoted.tags[DECISION_TAG] == "promoted"
    assert promoted.tags[DECISION_REASON_TAG] == "challenger not worse"
    assert float(promoted.tags["fraudops.decision.challenger_ap"]) == 0.61
    with pytest.raises(RegistryError, match="already the champion"):
        promote(client, model_name, 2, "again")

    restored = rollback(client, model_name, "bad live metrics")
    assert restored.version == "1"
    assert aliases_of(client, model_name)[CHAMPION] == "1"
    demoted = client.get_model_version(model_name, "2")
    assert demoted.tags[DECISION_TAG] == "rolled_back"
    assert demoted.tags[DECISION_REASON_TAG] == "bad live metrics"
    with pytest.raises(RegistryError, match="replaced no earlier champion"):
        rollback(client, model_name)


def test_missing_alias_or_model_is_none(mlflow_settings: Settings, model_name: str) -> None:
    client = configure_mlflow(mlflow_settings)
    assert version_by_alias(client, model_name, CHAMPION) is None
    uri, _ = log_tiny_model()
    register(client, uri, model_name)
    assert version_by_alias(client, model_name, "no-such-alias") is None
    assert version_by_alias(client, model_name, CHAMPION).version == "1"


def test_embedded_sqlite_registry_keeps_artifacts_under_home(model_name: str) -> None:
    settings = get_settings()
    client = configure_mlflow(settings)
    assert client.tracking_uri.startswith("sqlite:///")
    register_two_versions(client, model_name)
    assert any((settings.home / "mlartifacts").rglob("MLmodel"))


def test_unreachable_server_fails_fast_naming_the_uri() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=uri):
        configure_mlflow(Settings(mlflow_tracking_uri=uri))
    assert time.monotonic() - started < 15


def test_a_local_store_registers_while_the_process_default_is_a_server(
    mlflow_settings: Settings, model_name: str, tmp_path
) -> None:
    """MLflow's SQL registry finds a logged model through the process-wide tracking URI;
    registering into one store while another is the default must still work."""
    local = configure_mlflow(Settings(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'local.db'}"))
    model_uri, _ = log_tiny_model()
    configure_mlflow(mlflow_settings)

    version = register(local, model_uri, model_name)

    assert sorted(version.aliases) == [CHALLENGER, CHAMPION]
    assert mlflow.get_tracking_uri() == mlflow_settings.tracking_uri
