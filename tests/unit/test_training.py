"""The training steps without Prefect or MLflow: data identity, determinism, stored models,
the DVC evaluation, the reference sample."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fraudops.config import FeatureParams, Params, SimulateParams, TrainParams
from fraudops.data.datasets import read_raw, write_raw
from fraudops.data.schema import TX_FRAUD
from fraudops.data.simulate import simulate
from fraudops.features.definitions import feature_columns
from fraudops.modeling.candidates import Candidate, fit
from fraudops.modeling.steps import (
    CURVE_POINTS,
    PERIOD,
    SCORE,
    UNTRACKED,
    ModelCard,
    TrainingResult,
    curve_points,
    data_fingerprint,
    evaluate_model_dir,
    feature_importance,
    featurise,
    load_model_dir,
    reference_sample,
    save_model_dir,
    score_frame,
    train_bare,
    workspace_data,
)
from fraudops.tracking.runs import run_params, validation_metrics

pytestmark = pytest.mark.model

TINY_TRAIN = TrainParams(
    train_days=5,
    delay_days=3,
    test_days=5,
    validation_folds=2,
    candidates={
        "logistic_regression": {"fixed": {"max_iter": 300}, "grid": {"C": [0.1, 1.0]}},
        "xgboost": {"fixed": {"n_estimators": 10, "max_depth": 2}, "grid": {}},
    },
)
FAMILIES = [
    Candidate("logistic_regression", {"C": 1.0, "max_iter": 300}),
    Candidate("random_forest", {"n_estimators": 5, "max_depth": 4}),
    Candidate("xgboost", {"n_estimators": 10, "max_depth": 3}),
]


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("raw") / "raw"
    write_raw(simulate(SimulateParams(customers=150, terminals=300, days=40, seed=5)), folder)
    return folder


@pytest.fixture(scope="module")
def params() -> Params:
    # The split's gap is the label delay (Params checks): features use the same 3 days.
    return Params(features=FeatureParams(label_delay_days=3), train=TINY_TRAIN)


@pytest.fixture(scope="module")
def result(raw_dir: Path, params: Params) -> TrainingResult:
    return train_bare(workspace_data(raw_dir, raw_dir / "absent.dvc"), params)


def test_the_fingerprint_follows_the_file_contents(raw_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "raw"
    shutil.copytree(raw_dir, copy)
    assert data_fingerprint(copy) == data_fingerprint(raw_dir)

    last_day = sorted(copy.iterdir())[-1]
    shutil.rmtree(last_day)
    assert data_fingerprint(copy) != data_fingerprint(raw_dir)
    with pytest.raises(FileNotFoundError):
        data_fingerprint(tmp_path / "empty")


def test_the_data_version_comes_from_the_dvc_file_tracking_that_folder(
    raw_dir: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(raw_dir, project / "data" / "raw")
    dvc_file = project / "data.dvc"
    dvc_file.write_text("outs:\n- path: data/raw\n  md5: 0123abcd.dir\n")

    tracked = workspace_data(project / "data" / "raw", dvc_file)
    assert tracked.version == "0123abcd.dir"
    assert tracked.fingerprint == data_fingerprint(raw_dir)
    assert workspace_data(raw_dir, dvc_file).version == UNTRACKED


def test_training_twice_gives_the_same_model_scores_and_metrics(
    raw_dir: Path, params: Params, result: TrainingResult
) -> None:
    again = train_bare(workspace_data(raw_dir, raw_dir / "absent.dvc"), params)

    assert again.selection.candidate == result.selection.candidate
    assert again.evaluation.metrics == pytest.approx(result.evaluation.metrics, abs=1e-6)
    np.testing.assert_array_equal(again.evaluation.scores, result.evaluation.scores)
    assert {"roc_auc", "average_precision", "card_precision_at_100"} <= (
        result.evaluation.metrics.keys()
    )


@pytest.mark.parametrize("candidate", FAMILIES, ids=lambda c: c.family)
def test_a_stored_model_scores_exactly_as_the_trained_one(
    candidate: Candidate, result: TrainingResult, tmp_path: Path
) -> None:
    split, features = result.selection.split, result.features
    model = fit(candidate, split.train, features, seed=0, n_jobs=1)
    card = ModelCard.of(result.selection, features, "v1")

    save_model_dir(model, card, tmp_path / "models")
    stored, stored_card = load_model_dir(tmp_path / "models")

    assert stored_card == card
    expected = model.predict_proba(split.test.select(features).to_numpy())[:, 1]
    np.testing.assert_array_equal(score_frame(stored, stored_card, split.test), expected)


def test_the_dvc_evaluation_equals_the_flow_evaluation(
    raw_dir: Path, params: Params, result: TrainingResult, tmp_path: Path
) -> None:
    frame = featurise(read_raw(raw_dir), params.features)
    save_model_dir(result.selection.model, result.card, tmp_path / "models")

    metrics, curves = evaluate_model_dir(tmp_path / "models", frame, params)

    assert metrics == pytest.approx(result.evaluation.metrics, abs=1e-9)
    assert set(curves) == {"pr", "roc"}
    assert curves["pr"].columns == ["recall", "precision"]
    assert 2 <= curves["roc"].height <= CURVE_POINTS

    later = params.model_copy(
        update={"train": TINY_TRAIN.model_copy(update={"test_days": TINY_TRAIN.test_days - 1})}
    )
    with pytest.raises(ValueError, match="was trained for"):
        evaluate_model_dir(tmp_path / "models", frame, later)


def test_curves_are_thinned_to_a_bounded_size() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(20_000) < 0.05).astype(int)
    scores = rng.random(20_000) + y * 0.3

    curves = curve_points(y, scores)

    assert curves["pr"].height <= CURVE_POINTS
    assert curves["pr"]["recall"].max() == 1.0


def test_the_reference_sample_holds_features_label_and_score_of_both_periods(
    result: TrainingResult,
) -> None:
    sample = reference_sample(result, rows=500)

    assert sample.height == 500
    assert {*result.features, TX_FRAUD, SCORE, PERIOD} <= set(sample.columns)
    assert set(sample[PERIOD].unique()) == {"train", "test"}
    assert sample[SCORE].is_between(0, 1).all()
    assert sample.equals(reference_sample(result, rows=500))


def test_feature_importance_names_every_input(result: TrainingResult) -> None:
    importance = feature_importance(result.selection.model, result.features)

    assert list(importance) == feature_columns(result.params.features)
    assert all(value >= 0 for value in importance.values())
    assert sum(importance.values()) > 0


def test_run_params_are_flat_strings_within_mlflow_limits(result: TrainingResult) -> None:
    logged = run_params(result)

    assert all(isinstance(value, str) and len(value) < 6000 for value in logged.values())
    assert logged["model.family"] == result.selection.candidate.family
    assert logged["train.validation_folds"] == "2"
    assert logged["split.test_start"] == result.selection.split.test_start.isoformat()


def test_validation_metrics_are_the_winners_own(result: TrainingResult) -> None:
    logged = validation_metrics(result.selection)

    table = result.selection.validation
    winner = table.filter(table["candidate"] == result.selection.candidate.name)
    assert logged["val_average_precision"] == winner["average_precision"].item()
    assert "val_average_precision_std" in logged
