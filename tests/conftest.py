"""Shared fixtures: isolated settings, real services or a clear skip.

Real MLflow and Prefect servers cost 20-40 s each to start on a small machine, so they are
started once per session and shared: tests isolate themselves by name (a fresh registered
model name, their own flow names) instead of by server.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fraudops.config import Settings, get_settings
from fraudops.local.servers import (
    MlflowServer,
    PrefectServer,
    create_postgres_database,
    drop_postgres_database,
)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _require(name: str, port: int) -> None:
    if _reachable("127.0.0.1", port):
        return
    message = f"{name} is not reachable on 127.0.0.1:{port}"
    if os.environ.get("FRAUDOPS_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " and FRAUDOPS_REQUIRE_SERVICES=1")
    pytest.skip(message)


#: The kind of test each folder holds; a unit test module marks itself `data` or `model`
#: when that is what it checks, and is `code` otherwise.
_KIND_BY_FOLDER = {"integration": "service", "e2e": "e2e", "compose": "e2e", "docs": "code"}
KINDS = ("code", "data", "model", "service", "e2e")


#: Folders from the longest-running files to the quickest. `make test` hands whole files to
#: two workers in collection order (xdist's ``--dist loadfile --no-loadscope-reorder``), and
#: a long file handed out last would leave one worker running it alone.
_LONGEST_FIRST = ("e2e", "ci", "integration", "docs", "unit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test exactly one kind, so `pytest -m KIND` selects by what a test checks;
    then order the files longest first (a stable sort: a file's tests keep their order)."""
    for item in items:
        if any(item.get_closest_marker(kind) for kind in KINDS):
            continue
        folder = item.path.parent.name
        item.add_marker(getattr(pytest.mark, _KIND_BY_FOLDER.get(folder, "code")))
    items.sort(key=_expected_length_rank)


def _expected_length_rank(item: pytest.Item) -> int:
    folder = item.path.parent.name
    return _LONGEST_FIRST.index(folder) if folder in _LONGEST_FIRST else len(_LONGEST_FIRST)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A SQLAlchemy URL of the local PostgreSQL server (trust auth, user postgres)."""
    _require("PostgreSQL", 5432)
    return "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of the local Redis server."""
    _require("Redis", 6379)
    return "redis://127.0.0.1:6379/0"


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch):
    """Each test gets its own FRAUDOPS_HOME so no state leaks between tests."""
    monkeypatch.setenv("FRAUDOPS_HOME", str(tmp_path / "fraudops-home"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def mlflow_server(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """``mlflow server`` on a fresh PostgreSQL database, artifacts proxied to a temp dir."""
    root = tmp_path_factory.mktemp("mlflow-server")
    database_url = create_postgres_database(postgres_url)
    try:
        with MlflowServer(database_url, root / "artifacts", log_dir=root) as server:
            yield server
    finally:
        drop_postgres_database(database_url)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """``prefect server start`` on SQLite in its own PREFECT_HOME."""
    root = tmp_path_factory.mktemp("prefect-server")
    with PrefectServer(root / "home", log_dir=root) as server:
        yield server


@pytest.fixture
def model_name() -> str:
    """A registered model name no other test uses, since the server outlives each test."""
    return f"fraud-detector-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def mlflow_settings(
    mlflow_server: MlflowServer, model_name: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings aimed at the real server under this test's own model name.

    Set through the environment, so subprocesses the test starts see the same.
    """
    monkeypatch.setenv("FRAUDOPS_MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("FRAUDOPS_MODEL_NAME", model_name)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def prefect_api(
    prefect_server: PrefectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Flows run in this test report to the real server; returns its API URL.

    Prefect reads its settings once at import, so the environment alone is not enough
    in-process; the environment still matters for subprocesses the test starts.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        temporary_settings,
    )

    results = tmp_path / "prefect-results"
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    monkeypatch.setenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(results))
    updates = {PREFECT_API_URL: prefect_server.api_url, PREFECT_RESULTS_LOCAL_STORAGE_PATH: results}
    with temporary_settings(updates=updates):
        yield prefect_server.api_url
        # Send buffered logs and events while the server still listens: otherwise they
        # fail noisily at exit, or reach the server of a later test.
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)


@pytest.fixture(scope="session")
def project_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small project of the loop tests, built once (see ``loop_support``)."""
    from loop_support import build_project

    return build_project(tmp_path_factory.mktemp("project-template") / "project")


@pytest.fixture
def project(tmp_path: Path, project_template: Path) -> Path:
    """A copy of the small project that this test may change at will."""
    from loop_support import copy_project

    return copy_project(project_template, tmp_path / "project")
