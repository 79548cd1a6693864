"""``learning.mode`` picks how the retraining flow learns from the matured batch.

The small loop project: a first champion (40 trees), then two matured days of traffic and
a retraining by hand, once per mode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from loop_support import log_offline, simulated_days, use_project
from mlflow import MlflowClient

from fraudops.config import load_params
from fraudops.data.datasets import read_raw, write_raw
from fraudops.features.definitions import build_features
from fraudops.logs.journal import journal_dir, next_day
from fraudops.modeling.candidates import inputs
from fraudops.tracking.logged_models import load_registered_model
from fraudops.tracking.registry import configure_mlflow
from pipelines.retraining import retrain_flow
from pipelines.training import LEARNING_MODE_TAG, WARM_START_FROM_TAG, training_flow

pytestmark = pytest.mark.slow

CHAMPION_TREES = 40  # loop_support's small candidate


def with_mode(project: Path, mode: str) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["learning"]["mode"] = mode
    path.write_text(yaml.safe_dump(params))


def retrain_after_two_days(project: Path, monkeypatch: pytest.MonkeyPatch, mode: str):
    settings = use_project(monkeypatch, project)
    with_mode(project, mode)
    first = training_flow()
    days = simulated_days(next_day(settings.raw_dir), 2, "none")
    log_offline(settings, days)
    write_raw(days, journal_dir(settings))
    outcome = retrain_flow(trigger="manual", requested_by="tests", reason=f"mode {mode}")
    assert outcome.status == "retrained", outcome.reason
    assert outcome.data_version != first.data_version  # the batch is a data version either way
    return settings, outcome


def model_of(settings, version: str, folder: Path):
    return load_registered_model(f"models:/{settings.model_name}/{version}", folder)


@pytest.mark.parametrize("mode", ["full", "warm_start"])
def test_a_batch_mode_registers_a_challenger_tagged_with_how_it_learnt(
    mode: str, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str
) -> None:
    settings, outcome = retrain_after_two_days(project, monkeypatch, mode)

    assert outcome.learning_mode == mode and outcome.version == "2"
    client = configure_mlflow(settings)
    registered = client.get_model_version(settings.model_name, "2")
    run_tags = MlflowClient().get_run(registered.run_id).data.tags
    for tags in (registered.tags, run_tags):
        assert tags[LEARNING_MODE_TAG] == mode
    champion, _ = model_of(settings, "1", tmp_path / "v1")
    challenger, card = model_of(settings, "2", tmp_path / "v2")
    trees = challenger.num_boosted_rounds()
    if mode == "full":
        assert trees == CHAMPION_TREES and WARM_START_FROM_TAG not in registered.tags
        return
    params = load_params(project / "params.yaml")
    assert trees == CHAMPION_TREES + params.learning.warm_start_rounds
    assert registered.tags[WARM_START_FROM_TAG] == "1"
    features = build_features(read_raw(settings.raw_dir), params.features).tail(500)
    rows = inputs(features, list(card.features))
    np.testing.assert_array_equal(
        challenger[:CHAMPION_TREES].inplace_predict(rows, predict_type="margin"),
        champion.inplace_predict(rows, predict_type="margin"),
    )


def test_online_mode_trains_nothing_and_leaves_the_registry_as_it_was(
    project: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str
) -> None:
    settings, outcome = retrain_after_two_days(project, monkeypatch, "online")

    assert outcome.learning_mode == "online" and outcome.version is None
    assert outcome.routing == "routing unchanged: no serving_url configured"
    versions = configure_mlflow(settings).search_model_versions(f"name='{settings.model_name}'")
    assert [str(version.version) for version in versions] == ["1"]
