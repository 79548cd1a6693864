"""The MLflow model registry as the pipeline uses it: one model name, two aliases.

Every trained model becomes a version of ``settings.model_name``. The alias ``challenger``
always names the newest version; ``champion`` names the version that serves. The first
version gets both, so serving has a model from the start. Aliases only: registry stages are
deprecated in MLflow 3.

History lives in version tags, so the registry alone explains how the champion got there:
each decision writes ``fraudops.decision`` (promoted, rejected, rolled_back) with its reason,
time and numbers, and a promoted version remembers which version it replaced in
``fraudops.previous_champion``, which is what ``rollback`` follows.

``fraudops.tracking`` is the one package that imports MLflow; code elsewhere that names
MLflow's client, version or error types takes them from here.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Concatenate, Literal, ParamSpec, TypeVar

import mlflow
import requests

# Re-exported (`X as X`): the rest of the project takes MLflow's types from this seam.
from mlflow import MlflowClient as MlflowClient
from mlflow.entities.model_registry import ModelVersion as ModelVersion
from mlflow.exceptions import MlflowException as MlflowException

from fraudops.config import Settings

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION_TAG = "fraudops.previous_champion"
DECISION_TAG = "fraudops.decision"
DECISION_REASON_TAG = "fraudops.decision_reason"
DECIDED_AT_TAG = "fraudops.decided_at"
DECISION_NUMBER_PREFIX = "fraudops.decision."

Decision = Literal["promoted", "rejected", "rolled_back"]

# MLflow's default (7 retries, backoff factor 2, 120 s timeout) blocks about 247 s when
# the server is down; a service should fail in seconds. Explicit environment values win.
HTTP_POLICY = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}

_LOGGED_MODEL_URI = re.compile(r"models:/(m-[0-9a-f]+)")
_P = ParamSpec("_P")
_T = TypeVar("_T")


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (e.g. no previous champion to roll back to)."""


class RegistryUnavailable(RegistryError):
    """The tracking server could not be reached, even after retries."""

    def __init__(self, uri: str, cause: Exception) -> None:
        super().__init__(
            f"MLflow at {uri} is unreachable (is the server running, and is "
            f"FRAUDOPS_MLFLOW_TRACKING_URI right?): {cause}"
        )
        self.uri = uri


def _is_transport_failure(error: BaseException) -> bool:
    """MLflow wraps connection errors in a plain MlflowException; look down the chain."""
    link: BaseException | None = error
    while link is not None:
        if isinstance(link, requests.exceptions.RequestException):
            return True
        link = link.__cause__ or link.__context__
    return False


@contextmanager
def outage_named(uri: str) -> Iterator[None]:
    """Inside this block, an unreachable server at URI raises RegistryUnavailable naming it."""
    try:
        yield
    except MlflowException as error:
        if _is_transport_failure(error):
            raise RegistryUnavailable(uri, error) from error
        raise


def _client_call(
    func: Callable[Concatenate[MlflowClient, _P], _T],
) -> Callable[Concatenate[MlflowClient, _P], _T]:
    """Turn an unreachable server during FUNC into a RegistryUnavailable naming its URI."""

    @functools.wraps(func)
    def wrapper(client: MlflowClient, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with outage_named(client.tracking_uri):
            return func(client, *args, **kwargs)

    return wrapper


def configure_mlflow(settings: Settings) -> MlflowClient:
    """Point MLflow (tracking and registry) at the settings' URI and select the experiment.

    It also checks that the server answers, so an unreachable server fails here
    with ``RegistryUnavailable`` rather than halfway through a training run. With a local
    database URI (the embedded default) artifacts go under ``home/mlartifacts``; with a
    server, the server decides where artifacts live.
    """
    for name, value in HTTP_POLICY.items():
        os.environ.setdefault(name, value)
    uri = settings.tracking_uri
    if not _is_server(uri):
        settings.home.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with outage_named(uri):
        experiment_id = _experiment_id(client, settings)
    # Only a reachable store becomes the process-wide default.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(experiment_id=experiment_id)
    return client


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _experiment_id(client: MlflowClient, settings: Settings) -> str:
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if not _is_server(client.tracking_uri):
        artifact_location = (settings.home / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(settings.experiment_name, artifact_location)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        # Another process created it between our lookup and our create.
        existing = client.get_experiment_by_name(settings.experiment_name)
        if existing is None:  # and deleted it again: the create's own error says what happened
            raise
        return existing.experiment_id


@_client_call
def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version ALIAS points to; None when there is no such alias or no such model yet."""
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if alias not in aliases:
        return None
    return client.get_model_version(name, aliases[alias])


@contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """Make URI the process-wide tracking URI inside this block.

    MLflow's SQL registry store looks a ``models:/m-…`` source up through a fresh
    ``MlflowClient()``, that is through the global URI, not the client's own. When a
    process talks to more than one store, the two must agree or the lookup fails.
    """
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


@_client_call
def register(
    client: MlflowClient, model_uri: str, name: str, tags: Mapping[str, str] | None = None
) -> ModelVersion:
    """Register MODEL_URI as the new ``challenger``; also ``champion`` if there is none yet.

    MODEL_URI is the ``models:/m-…`` URI that ``log_model`` returns in MLflow 3; the version
    is linked to the run that logged the model, so it leads back to params and metrics.
    """
    match = _LOGGED_MODEL_URI.fullmatch(model_uri)
    if match is None:
        raise ValueError(f"expected a logged model URI (models:/m-…), got {model_uri!r}")
    model_id = match.group(1)
    run_id = client.get_logged_model(model_id).source_run_id
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with _global_tracking_uri(client.tracking_uri):
        version = client.create_model_version(
            name, source=model_uri, run_id=run_id, tags=dict(tags or {}), model_id=model_id
        )
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    if version_by_alias(client, name, CHAMPION) is None:
        client.set_registered_model_alias(name, CHAMPION, version.version)
    return client.get_model_version(name, version.version)


@_client_call
def record_decision(
    client: MlflowClient,
    name: str,
    version: str | int,
    decision: Decision,
    reason: str,
    numbers: Mapping[str, float] | None = None,
) -> None:
    """Write a promotion decision and the numbers behind it onto the version's tags.

    Numbers land as ``fraudops.decision.<key>``; a later decision overwrites the earlier
    one's tags (the runs of the promotion flow keep the full history).
    """
    tags = {
        DECISION_TAG: decision,
        DECISION_REASON_TAG: reason,
        DECIDED_AT_TAG: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    tags |= {DECISION_NUMBER_PREFIX + key: str(value) for key, value in (numbers or {}).items()}
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)


@_client_call
def promote(
    client: MlflowClient,
    name: str,
    version: str | int,
    reason: str,
    numbers: Mapping[str, float] | None = None,
) -> ModelVersion:
    """Make VERSION the champion, remembering the one it replaces for ``rollback``."""
    version = str(version)
    current = version_by_alias(client, name, CHAMPION)
    if current is not None and current.version == version:
        raise RegistryError(f"version {version} of {name!r} is already the champion")
    if current is not None:
        client.set_model_version_tag(name, version, PREVIOUS_CHAMPION_TAG, current.version)
    record_decision(client, name, version, "promoted", reason, numbers)
    client.set_registered_model_alias(name, CHAMPION, version)
    return client.get_model_version(name, version)


@_client_call
def rollback(client: MlflowClient, name: str, reason: str = "manual rollback") -> ModelVersion:
    """Move ``champion`` back to the version the current champion replaced.

    Repeated rollbacks walk further back along the chain of champions.
    """
    current = version_by_alias(client, name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name!r} has no champion to roll back")
    previous = current.tags.get(PREVIOUS_CHAMPION_TAG)
    if previous is None:
        raise RegistryError(
            f"champion version {current.version} of {name!r} replaced no earlier champion"
        )
    record_decision(client, name, current.version, "rolled_back", reason)
    client.set_registered_model_alias(name, CHAMPION, previous)
    return client.get_model_version(name, previous)
