"""The training flow for real: Prefect server, MLflow on SQLite and on a PostgreSQL-backed
server, DVC revisions, bad data and an unreachable tracking server."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient
from sklearn.dummy import DummyClassifier

from fraudops.config import Settings, get_settings, load_params
from fraudops.data.datasets import PART_FILE, read_raw, write_raw
from fraudops.data.schema import TX_AMOUNT, TX_FRAUD
from fraudops.data.validation import BatchRejected
from fraudops.data.versioning import data_version, record_data_version
from fraudops.features.definitions import feature_columns
from fraudops.local.servers import free_port
from fraudops.modeling.steps import SCORE, UNTRACKED, featurise, score_frame
from fraudops.tracking.logged_models import load_registered_model
from fraudops.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    RegistryUnavailable,
    configure_mlflow,
    register,
    version_by_alias,
)
from fraudops.tracking.runs import (
    DATA_FINGERPRINT_TAG,
    DATA_REV_TAG,
    DATA_VERSION_TAG,
    GIT_SHA_TAG,
    MODEL_FAMILY_TAG,
)
from pipelines.training import TrainingOutcome, training_flow

STEPS = {
    "connect to MLflow",
    "locate data",
    "load data",
    "validate data",
    "build features",
    "read features",
    "select model",
    "evaluate on test",
    "log to MLflow",
    "register model",
}
METRICS = {
    "roc_auc",
    "average_precision",
    "card_precision_at_100",
    "precision",
    "recall",
    "f1",
    "recall_at_1pct_fpr",
    "expected_cost",
    "threshold",
}
PLOTS = {
    "plots/pr_curve.png",
    "plots/roc_curve.png",
    "plots/confusion_matrix.png",
    "plots/calibration.png",
    "plots/feature_importance.png",
}


def train(**kwargs: object) -> tuple[TrainingOutcome, UUID]:
    state = training_flow(return_state=True, **kwargs)
    return state.result(), state.state_details.flow_run_id


def task_states(flow_run_id: UUID, expected: set[str], timeout: float = 30.0) -> dict[str, str]:
    """Task name → final state name; task states reach the server as events, so poll."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs_of = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=runs_of)
            states = {
                run.name.rsplit("-", 1)[0]: run.state.name
                for run in runs
                if run.state is not None and run.state.is_final()
            }
            if expected <= states.keys() or time.monotonic() > deadline:
                return states
            time.sleep(0.5)


def artifact_paths(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    paths = set()
    for item in client.list_artifacts(run_id, folder):
        paths |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return paths


def assert_run_records_everything(client: MlflowClient, outcome: TrainingOutcome) -> None:
    run = client.get_run(outcome.run_id)
    assert run.data.metrics.keys() >= METRICS
    assert run.data.metrics["average_precision"] == pytest.approx(
        outcome.metrics["average_precision"]
    )
    assert {"train.train_days", "model.family", "split.test_start"} <= run.data.params.keys()
    assert run.data.tags[GIT_SHA_TAG]
    assert run.data.tags[MODEL_FAMILY_TAG] == run.data.params["model.family"]
    assert run.data.tags[DATA_VERSION_TAG] == outcome.data_version

    artifacts = artifact_paths(client, outcome.run_id)
    assert artifacts >= PLOTS
    assert {"model_card.json", "reference/reference.parquet"} <= artifacts
    contexts = {
        tag.value
        for dataset_input in run.inputs.dataset_inputs
        for tag in dataset_input.tags
        if tag.key == "mlflow.data.context"
    }
    assert contexts == {"training", "testing"}

    info = mlflow.models.get_model_info(outcome.model_uri)
    assert info.signature is not None and info.saved_input_example_info is not None
    assert info.metadata["features"] == feature_columns(load_params().features)

    reference = pl.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=outcome.run_id, artifact_path="reference/reference.parquet"
        )
    )
    assert {SCORE, TX_FRAUD, *info.metadata["features"]} <= set(reference.columns)
    assert reference[SCORE].is_between(0, 1).all()


def test_flow_on_embedded_mlflow_records_the_run_and_registers_a_champion(
    prefect_api: str, small_training: Settings
) -> None:
    outcome, flow_run_id = train()

    assert sorted(outcome.aliases) == [CHALLENGER, CHAMPION]
    assert outcome.data_version == UNTRACKED  # the small data has no .dvc file
    client = configure_mlflow(small_training)
    assert client.tracking_uri.startswith("sqlite:///")
    assert_run_records_everything(client, outcome)
    version = client.get_model_version(small_training.model_name, outcome.version)
    assert version.run_id == outcome.run_id
    assert version.tags[DATA_FINGERPRINT_TAG]
    assert task_states(flow_run_id, STEPS).keys() == STEPS


def test_same_data_and_params_give_the_same_metrics_and_predictions(
    prefect_api: str, small_training: Settings, tmp_path: Path
) -> None:
    first, _ = train()
    second, second_run = train()

    assert second.version != first.version
    assert second.aliases == [CHALLENGER]
    assert second.metrics.keys() == first.metrics.keys()
    for name, value in first.metrics.items():
        assert second.metrics[name] == pytest.approx(value, abs=1e-6), name
    assert task_states(second_run, {"build features"})["build features"] == "Cached"

    features = featurise(read_raw(small_training.raw_dir), load_params().features)
    configure_mlflow(small_training)
    scores = []
    for outcome in (first, second):
        model, card = load_registered_model(outcome.model_uri, tmp_path / outcome.version)
        scores.append(score_frame(model, card, features))
    np.testing.assert_array_equal(scores[0], scores[1])


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=fraudops", "-c", "user.email=fraudops@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def dvc_project(root: Path, raw_dir: Path) -> Path:
    """A git + DVC repository whose HEAD commit versions a copy of RAW_DIR."""
    root.mkdir()
    shutil.copytree(raw_dir, root / "data" / "raw")
    (root / "data.dvc").write_text("outs:\n- path: data/raw\n")
    git("init", "-q", cwd=root)
    for args in (["init", "-q"], ["remote", "add", "-d", "local", str(root.parent / "remote")]):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=True)
    record_data_version(root / "data.dvc")
    git("add", "-A", cwd=root)
    git("commit", "-qm", "data", cwd=root)
    return root


@pytest.mark.slow
def test_flow_on_real_servers_trains_the_data_version_of_a_git_revision(
    prefect_api: str,
    mlflow_settings: Settings,
    small_training: Settings,
    small_data_dir: Path,
    tmp_path: Path,
) -> None:
    project = dvc_project(tmp_path / "project", small_data_dir / "raw")
    shutil.rmtree(project / "data" / "raw")  # the revision, not the workspace, is read
    settings = get_settings()
    assert settings.tracking_uri == mlflow_settings.tracking_uri

    outcome, _ = train(rev="HEAD", project=project, tags={"fraudops.trigger": "test"})

    client = configure_mlflow(settings)
    assert outcome.data_version == data_version(project / "data.dvc")
    assert_run_records_everything(client, outcome)
    run = client.get_run(outcome.run_id)
    assert run.data.tags[DATA_REV_TAG] == "HEAD"
    assert run.data.tags["fraudops.trigger"] == "test"
    version = client.get_model_version(settings.model_name, outcome.version)
    assert sorted(version.aliases) == [CHALLENGER, CHAMPION]
    assert version.tags[DATA_VERSION_TAG] == outcome.data_version
    assert version.tags["fraudops.trigger"] == "test"


def test_a_rejected_batch_stops_before_training_and_keeps_the_champion(
    prefect_api: str,
    small_training: Settings,
    small_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = configure_mlflow(small_training)
    with mlflow.start_run():
        model = DummyClassifier().fit([[0.0], [1.0]], [0, 1])
        info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
    champion = register(client, info.model_uri, small_training.model_name)

    bad_data = tmp_path / "bad-data"
    shutil.copytree(small_data_dir, bad_data)
    day = sorted((bad_data / "raw").iterdir())[10]
    rows = pl.read_parquet(day / PART_FILE)
    negative_first_rows = pl.when(pl.int_range(pl.len()) < 3).then(-1.0)
    rows = rows.with_columns(negative_first_rows.otherwise(pl.col(TX_AMOUNT)).alias(TX_AMOUNT))
    write_raw(rows, bad_data / "raw", overwrite=True)

    monkeypatch.setenv("FRAUDOPS_DATA_DIR", str(bad_data))
    get_settings.cache_clear()
    state = training_flow(return_state=True)
    with pytest.raises(BatchRejected, match="negative_amount"):
        state.result()

    steps = task_states(state.state_details.flow_run_id, {"validate data"})
    assert steps["validate data"] == "Failed"
    assert not {"build features", "select model", "register model"} & steps.keys()
    versions = client.search_model_versions(f"name = '{small_training.model_name}'")
    assert [version.version for version in versions] == [champion.version]
    current = version_by_alias(client, small_training.model_name, CHAMPION)
    assert current is not None and current.version == champion.version


@pytest.mark.slow
def test_an_unreachable_tracking_server_fails_the_flow_with_a_clear_message(
    prefect_api: str, small_training: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("FRAUDOPS_MLFLOW_TRACKING_URI", uri)
    get_settings.cache_clear()

    started = time.monotonic()
    state = training_flow(return_state=True)
    with pytest.raises(RegistryUnavailable, match="unreachable") as failure:
        state.result()

    assert uri in str(failure.value)
    assert time.monotonic() - started < 90
    steps = task_states(state.state_details.flow_run_id, {"connect to MLflow"})
    assert steps == {"connect to MLflow": "Failed"}
