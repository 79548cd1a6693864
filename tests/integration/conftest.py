"""Small training data shared by the flow tests: seconds per training run, not minutes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from fraudops.config import Settings, SimulateParams, get_settings
from fraudops.data.datasets import write_raw
from fraudops.data.simulate import simulate

if TYPE_CHECKING:  # Dask loads with the tests that use it, not with every session
    from distributed import Client, LocalCluster

PROJECT = Path(__file__).resolve().parents[2]
SMALL_DATA = SimulateParams(customers=300, terminals=600, days=70, seed=3)
#: Handbook periods, fewer folds, one small model per family: a run trains in seconds.
SMALL_TRAIN = {
    "validation_folds": 2,
    "candidates": {
        "logistic_regression": {"fixed": {"max_iter": 500}, "grid": {"C": [1.0]}},
        "random_forest": {"fixed": {"n_estimators": 20, "max_depth": 6}, "grid": {}},
        "xgboost": {"fixed": {"n_estimators": 30, "max_depth": 3}, "grid": {}},
    },
}


def write_params(path: Path, train: dict, features: dict | None = None) -> Path:
    """The project's params.yaml with TRAIN's (and FEATURES') keys replaced."""
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["train"].update(train)
    params["features"].update(features or {})
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder whose raw/ holds 70 simulated days (about 42 k transactions)."""
    data_dir = tmp_path_factory.mktemp("small-data")
    write_raw(simulate(SMALL_DATA), data_dir / "raw")
    return data_dir


@pytest.fixture(scope="session")
def small_params_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_params(tmp_path_factory.mktemp("params") / "params.yaml", SMALL_TRAIN)


@pytest.fixture
def small_training(
    small_data_dir: Path, small_params_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings that train on the small data with the small parameters."""
    monkeypatch.setenv("FRAUDOPS_DATA_DIR", str(small_data_dir))
    monkeypatch.setenv("FRAUDOPS_PARAMS_PATH", str(small_params_path))
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def small_params_with(tmp_path: Path) -> Callable[[dict], Path]:
    """Write a params.yaml with the small training parameters updated by the given ones."""
    written = 0

    def write(train: dict, features: dict | None = None) -> Path:
        nonlocal written
        written += 1
        path = tmp_path / f"params-{written}.yaml"
        return write_params(path, {**SMALL_TRAIN, **train}, features)

    return write


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[LocalCluster]:
    """A Dask cluster of two worker processes (one thread each) for one test file."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cluster_client(dask_cluster: LocalCluster) -> Iterator[Client]:
    """A client of `dask_cluster`, not made the process's default."""
    from distributed import Client

    with Client(dask_cluster, set_as_default=False) as client:
        yield client
