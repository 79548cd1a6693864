"""`fraudops score-batch`: a data version through the registered champion, in this process and
on a real Dask cluster (worker processes), with the same scores; against an embedded MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from distributed import Client, LocalCluster
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from fraudops.cli import app
from fraudops.config import (
    CandidateGrid,
    FeatureParams,
    Params,
    Settings,
    SimulateParams,
    TrainParams,
    get_settings,
)
from fraudops.data.datasets import read_raw, write_raw
from fraudops.data.schema import TRANSACTION_ID
from fraudops.data.simulate import simulate
from fraudops.data.versioning import record_data_version
from fraudops.local.servers import HOST, free_port
from fraudops.modeling import steps
from fraudops.scale.batch_scoring import DECISION, load_champion, score_batch
from fraudops.tracking import runs
from fraudops.tracking.registry import configure_mlflow, register

PROJECT = Path(__file__).resolve().parents[2]
runner = CliRunner()

#: A Dask cluster of worker processes starts for this file: long for `make test-fast`.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repository whose HEAD records 35 simulated days as data.dvc's version."""
    root = tmp_path_factory.mktemp("score-batch") / "project"
    root.mkdir()
    (root / "params.yaml").write_text((PROJECT / "params.yaml").read_text())
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    _run(["git", "init", "-q"], root)
    _run([sys.executable, "-m", "dvc", "init", "-q"], root)
    write_raw(
        simulate(SimulateParams(customers=300, terminals=600, days=35, seed=1)),
        root / "data" / "raw",
    )
    (root / "data.dvc").write_text("outs:\n- path: data/raw\n")
    record_data_version(root / "data.dvc", push=False)
    _run([*git, "add", "data.dvc", ".dvc", "params.yaml"], root)
    _run([*git, "commit", "-q", "-m", "data"], root)
    return root


def _run(args: list[str], cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def registry(project: Path) -> Settings:
    """An embedded MLflow whose model's champion is a small XGBoost trained on the project."""
    settings = Settings(home=project / ".fraudops", model_name="batch-scorer")
    raw_dir = project / "data" / "raw"
    source = steps.DataSource(raw_dir, steps.UNTRACKED, steps.data_fingerprint(raw_dir))
    grid = {"xgboost": CandidateGrid(fixed={"n_estimators": 20, "max_depth": 3})}
    params = Params(train=TrainParams(validation_folds=1, n_jobs=1, candidates=grid))
    result = steps.train_bare(source, params)
    client = configure_mlflow(settings)
    logged = runs.log_training_run(result)
    register(client, logged.model_uri, settings.model_name, logged.tags)
    return settings


@pytest.fixture
def in_project(project: Path, registry: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Commands run from the project, against its registry, without a Dask address."""
    monkeypatch.chdir(project)
    for name, value in {
        "HOME": str(registry.home),
        "MODEL_NAME": registry.model_name,
        "DATA_DIR": str(project / "data"),
        "PARAMS_PATH": str(project / "params.yaml"),
    }.items():
        monkeypatch.setenv(f"FRAUDOPS_{name}", value)
    monkeypatch.delenv("FRAUDOPS_DASK_ADDRESS", raising=False)
    get_settings.cache_clear()
    return project


def test_scores_on_dask_equal_the_single_process_ones(
    project: Path, registry: Settings, dask_cluster: LocalCluster
) -> None:
    raw = read_raw(project / "data" / "raw")
    champion = load_champion(registry)
    here = score_batch(raw, champion, FeatureParams())
    with Client(dask_cluster) as client:
        on_dask = score_batch(raw, champion, FeatureParams(), client)
    np.testing.assert_array_equal(on_dask["score"].to_numpy(), here["score"].to_numpy())
    assert_frame_equal(on_dask, here)
    assert here[TRANSACTION_ID].to_list() == sorted(raw[TRANSACTION_ID].to_list())
    assert here[DECISION].to_list() == (here["score"] >= champion.card.threshold).to_list()
    assert 0 < here[DECISION].sum() < here.height
    assert set(here["model_version"]) == {"1"} and set(here["model_name"]) == {"batch-scorer"}


def test_the_command_scores_the_recorded_version_not_the_workspace(
    in_project: Path, dask_cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workspace loses its last day after the commit: --data-version HEAD still has it."""
    recorded = read_raw(in_project / "data" / "raw")
    last_day = sorted((in_project / "data" / "raw").iterdir())[-1]
    moved = tmp_path / last_day.name
    last_day.rename(moved)
    try:
        local_out, dask_out = tmp_path / "local.parquet", tmp_path / "dask.parquet"
        args = ["score-batch", "--data-version", "HEAD"]
        done = runner.invoke(app, [*args, "--out", str(local_out)])
        assert done.exit_code == 0, done.output
        monkeypatch.setenv("FRAUDOPS_DASK_ADDRESS", dask_cluster.scheduler_address)
        get_settings.cache_clear()
        done = runner.invoke(app, [*args, "--out", str(dask_out)])
        assert done.exit_code == 0, done.output
        workspace = runner.invoke(app, ["score-batch", "--out", str(tmp_path / "ws.parquet")])
        assert workspace.exit_code == 0, workspace.output
    finally:
        moved.rename(last_day)
    local, on_dask = pl.read_parquet(local_out), pl.read_parquet(dask_out)
    assert local.height == recorded.height
    assert pl.read_parquet(tmp_path / "ws.parquet").height < recorded.height
    np.testing.assert_array_equal(on_dask["score"].to_numpy(), local["score"].to_numpy())
    assert_frame_equal(on_dask, local)


def test_an_unreachable_scheduler_is_one_line_naming_it(
    in_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"tcp://{HOST}:{free_port()}"
    monkeypatch.setenv("FRAUDOPS_DASK_ADDRESS", address)
    monkeypatch.setenv("FRAUDOPS_DASK_CONNECT_TIMEOUT_S", "1")
    get_settings.cache_clear()
    done = runner.invoke(app, ["score-batch", "--out", str(tmp_path / "x.parquet")])
    assert done.exit_code == 1
    assert "Traceback" not in done.output
    assert address in done.output and "FRAUDOPS_DASK_ADDRESS" in done.output
    assert not (tmp_path / "x.parquet").exists()


def test_a_data_version_and_a_raw_folder_together_are_refused(
    in_project: Path, tmp_path: Path
) -> None:
    args = ["--data-version", "HEAD", "--raw", "data/raw", "--out", str(tmp_path / "x.parquet")]
    done = runner.invoke(app, ["score-batch", *args])
    assert done.exit_code == 1
    assert "pass one" in done.output
