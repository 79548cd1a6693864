"""What the serving tests share: small registered models, a real server, a load driver.

Training and logging two small models costs about 20 s here (most of it MLflow creating
its tables), so it happens once per session in a SQLite store of its own; each test then
registers those logged models under a model name of its own, which takes a second and
leaves every other test's registry alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl
from mlflow import MlflowClient

from fraudops.config import CandidateGrid, Params, Settings, SimulateParams, TrainParams
from fraudops.data.datasets import write_raw
from fraudops.data.schema import CUSTOMER_ID, TERMINAL_ID, TRANSACTION_ID, TX_AMOUNT, TX_DATETIME
from fraudops.data.simulate import simulate
from fraudops.modeling.steps import train_bare, workspace_data
from fraudops.tracking.registry import configure_mlflow, register
from fraudops.tracking.runs import log_training_run
from serving.server import ServingProcess

ADMIN_KEY = "test-admin-key-0123456789"
ID_SALT = "test-id-salt"
SMALL_DATA = SimulateParams(customers=200, terminals=400, days=40, seed=3)
#: Two XGBoost models that differ enough for shadow decisions to disagree now and then.
CANDIDATES = (
    {"n_estimators": 30, "max_depth": 3},
    {"n_estimators": 60, "max_depth": 5, "learning_rate": 0.3},
)


@dataclass(frozen=True)
class LoggedModels:
    """Models logged once per session; ``uris[i]`` becomes version i + 1 when registered."""

    tracking_uri: str
    uris: tuple[str, ...]
    raw: pl.DataFrame


@functools.cache
def logged_models(base: Path) -> LoggedModels:
    """Train and log the small models in a store under BASE, once per session.

    Every test module asks with the session's base temp dir, so they all share one store.
    """
    root = base / "serving-models"
    raw = simulate(SMALL_DATA)
    write_raw(raw, root / "raw")
    settings = Settings(home=root / "home", mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    configure_mlflow(settings)
    source = workspace_data(root / "raw", root / "untracked.dvc")
    uris = []
    for hyperparams in CANDIDATES:
        params = Params(
            train=TrainParams(
                validation_folds=1,
                candidates={"xgboost": CandidateGrid(fixed=hyperparams)},
            )
        )
        uris.append(log_training_run(train_bare(source, params)).model_uri)
    return LoggedModels(settings.tracking_uri, tuple(uris), raw)


def register_versions(models: LoggedModels, name: str, count: int) -> MlflowClient:
    """Register the first COUNT logged models under NAME: v1 champion, the last challenger."""
    client = MlflowClient(tracking_uri=models.tracking_uri, registry_uri=models.tracking_uri)
    for uri in models.uris[:count]:
        register(client, uri, name)
    return client


def serving_env(
    home: Path,
    models: LoggedModels,
    model_name: str,
    *,
    admin_key: str | None = ADMIN_KEY,
    **extra: str,
) -> dict[str, str]:
    """The environment of one server: its own home (stores, cache, routing file)."""
    env = {
        "FRAUDOPS_HOME": str(home),
        "FRAUDOPS_MLFLOW_TRACKING_URI": models.tracking_uri,
        "FRAUDOPS_MODEL_NAME": model_name,
        "FRAUDOPS_ROUTING_PATH": str(home / "routing.yaml"),
        "FRAUDOPS_ADMIN_API_KEY": admin_key or "",
        "FRAUDOPS_ID_HASH_SALT": ID_SALT,
        "FRAUDOPS_PREDICTION_LOG_FLUSH_INTERVAL_S": "0.1",
    }
    return env | {f"FRAUDOPS_{key.upper()}": value for key, value in extra.items()}


@contextmanager
def running_server(
    log_dir: Path, env: Mapping[str, str], workers: int = 1
) -> Iterator[ServingProcess]:
    with ServingProcess(log_dir, workers=workers, env=env) as server:
        yield server


def admin_headers() -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY}


def unique_model_name() -> str:
    return f"fraud-detector-{uuid.uuid4().hex[:8]}"


# --- transactions --------------------------------------------------------------------------


def payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """A raw simulated transaction as the API takes it."""
    return {
        "transaction_id": int(row[TRANSACTION_ID]),
        "timestamp": row[TX_DATETIME].isoformat(),
        "customer_id": int(row[CUSTOMER_ID]),
        "terminal_id": int(row[TERMINAL_ID]),
        "amount": float(row[TX_AMOUNT]),
    }


def payloads(raw: pl.DataFrame, count: int, offset: int = 0) -> list[dict[str, Any]]:
    return [payload(row) for row in raw.slice(offset, count).iter_rows(named=True)]


def synthetic_payloads(count: int, first_id: int, customers: int = 500) -> list[dict[str, Any]]:
    """Distinct transactions spread over many customers, for load and routing shares."""
    start = dt.datetime(2018, 6, 1, 12)
    return [
        {
            "transaction_id": first_id + i,
            "timestamp": (start + dt.timedelta(seconds=i)).isoformat(),
            "customer_id": i % customers,
            "terminal_id": i % 97,
            "amount": 10.0 + i % 200,
        }
        for i in range(count)
    ]


# --- load from a background thread ---------------------------------------------------------


@dataclass
class LoadResult:
    """Every answer the driver got: status, request id and model version per 200."""

    ok: dict[str, str] = field(default_factory=dict)  # request id -> model version
    statuses: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0
    versions_seen: set[str] = field(default_factory=set)

    @property
    def failed(self) -> int:
        return self.transport_errors + sum(n for code, n in self.statuses.items() if code != 200)


class LoadDriver:
    """Sends transactions from several connections until stopped, in its own thread.

    After ``stop_on_refusal`` the driver ends quietly once the server stops accepting
    (the SIGTERM test); otherwise a transport error counts as a failure.
    """

    def __init__(self, url: str, transactions: list[dict[str, Any]], concurrency: int = 8) -> None:
        self.url = url
        self.transactions = transactions
        self.concurrency = concurrency
        self.result = LoadResult()
        self._stop = threading.Event()
        self._next = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> LoadDriver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def sent(self) -> int:
        return self._next

    def wait_for(self, responses: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.result.ok) < responses:
            assert time.monotonic() < deadline, f"only {len(self.result.ok)} answers in time"
            time.sleep(0.05)

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(60)
        return self.result

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency)
        async with httpx.AsyncClient(base_url=self.url, limits=limits, timeout=30) as client:
            await asyncio.gather(*(self._worker(client) for _ in range(self.concurrency)))

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set() and self._next < len(self.transactions):
            body = self.transactions[self._next]
            self._next += 1
            try:
                response = await client.post("/v1/score", json=body)
            except httpx.TransportError:
                self.result.transport_errors += 1
                await asyncio.sleep(0.01)
                continue
            statuses = self.result.statuses
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code == 200:
                answer = response.json()
                self.result.ok[answer["request_id"]] = answer["model"]["version"]
                self.result.versions_seen.add(answer["model"]["version"])
