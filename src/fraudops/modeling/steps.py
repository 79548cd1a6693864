"""One training run as plain steps, and the record it leaves in MLflow.

The steps are load → validate → featurise → select → evaluate. Selection
(`fraudops.modeling.candidates.select_model`) splits by time, picks a candidate on prequential
validation folds, refits it on the final training window and chooses the alert threshold of least
expected cost on the validation scores; evaluation scores the untouched test period.

Three callers run the same steps: the Prefect flow wraps each one in a task, the DVC
stages run them from the feature file, and `train_bare` runs them in a row with nothing
around them, the baseline the orchestration overhead is measured against.

A trained model is kept in its native format (an XGBoost booster, or a scikit-learn
estimator saved with skops) next to a `ModelCard` naming its inputs, threshold and
lineage, so a server can load it without MLflow's pyfunc layer and score a numpy row.
XGBoost models are stored as boosters because `XGBClassifier.save_model` fails with the
installed scikit-learn (it no longer defines `_estimator_type`); a booster scores batches
with `inplace_predict`, and serving walks its trees itself (`fraudops.modeling.tree_ensemble`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import polars as pl
import xgboost as xgb
import yaml
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import precision_recall_curve, roc_curve
from sklearn.pipeline import Pipeline

from fraudops.config import FeatureParams, HyperValue, ModelFamily, Params, ValidateParams
from fraudops.data.datasets import read_raw
from fraudops.data.schema import TX_DATETIME, TX_FRAUD
from fraudops.data.split import final_split
from fraudops.data.validation import validate_features, validate_raw
from fraudops.data.versioning import VersioningError, data_version
from fraudops.fairness.segment_report import SegmentReport, segment_report
from fraudops.features.definitions import KEY_COLUMNS, build_features, feature_columns
from fraudops.modeling.candidates import Model, Selection, fraud_scores, inputs, select_model
from fraudops.modeling.evaluation import evaluate

#: Column of model scores in the reference sample (the prediction log uses the same name).
SCORE = "score"
#: Column telling reference rows of the training window from those of the test period.
PERIOD = "period"
#: How many rows the reference sample keeps: enough for drift tests, small to compare.
REFERENCE_ROWS = 50_000
#: skops refuses tree node storage unless it is trusted; we load only our own models.
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]
#: Written beside every stored model.
MODEL_CARD_FILE = "model_card.json"
#: The data version of a folder no ``.dvc`` file tracks.
UNTRACKED = "untracked"
#: Points kept per curve in DVC plot files; enough to draw, small to diff.
CURVE_POINTS = 500


NativeModel: TypeAlias = xgb.Booster | Pipeline | RandomForestClassifier

_XGBOOST_FILE = "model.ubj"
_SKOPS_FILE = "model.skops"


# --- which data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSource:
    """A raw data folder, the DVC version it is, and a hash of its contents.

    ``version`` is what lineage records (the ``.dir`` hash in ``data.dvc``); ``fingerprint``
    is computed from the files themselves, so caches stay right even for an untracked or
    edited folder.
    """

    raw_dir: Path
    version: str
    fingerprint: str
    rev: str | None = None


def data_fingerprint(raw_dir: Path) -> str:
    """A hash of every Parquet file under RAW_DIR: its path and its bytes."""
    digest = hashlib.blake2b(digest_size=16)
    files = sorted(raw_dir.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files under {raw_dir}")
    for path in files:
        digest.update(path.relative_to(raw_dir).as_posix().encode())
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "blake2b").digest())
    return digest.hexdigest()


def recorded_version(dvc_file: Path, raw_dir: Path) -> str:
    """The hash DVC_FILE records for RAW_DIR; UNTRACKED if it tracks another path or no hash.

    It is the version last committed to DVC: edits since then show in the fingerprint only.
    """
    if not dvc_file.exists():
        return UNTRACKED
    out = yaml.safe_load(dvc_file.read_text())["outs"][0]
    if "md5" not in out or (dvc_file.parent / out["path"]).resolve() != raw_dir.resolve():
        return UNTRACKED
    return data_version(dvc_file)


def workspace_data(raw_dir: Path, dvc_file: Path) -> DataSource:
    """The raw folder as it is on disk, with the version DVC_FILE records for it."""
    return DataSource(raw_dir, recorded_version(dvc_file, raw_dir), data_fingerprint(raw_dir))


def data_at_rev(repo: Path, rev: str, cache_dir: Path, dvc_file: str = "data.dvc") -> DataSource:
    """The raw data that DVC_FILE recorded at git revision REV, fetched into CACHE_DIR.

    DVC reads it from its cache or the remote. Each version lands in its own folder, named
    by its hash, and is fetched once.
    """
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException

    try:
        files = DVCFileSystem(str(repo), rev=rev)
        out = yaml.safe_load(files.read_text(dvc_file))["outs"][0]
        version = out["md5"]
        target = cache_dir / version.removesuffix(".dir")
        if not target.is_dir():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.parent.mkdir(parents=True, exist_ok=True)
            source = posixpath.join(posixpath.dirname(dvc_file), out["path"])
            files.get(source, str(partial), recursive=True)
            os.replace(partial, target)
    except (DvcException, FileNotFoundError, KeyError) as error:
        raise VersioningError(
            f"no data version in {dvc_file} at {rev!r} of {repo}: {error}"
        ) from error
    return DataSource(target, version, data_fingerprint(target), rev)


# --- the steps -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """Scores of the test period and every metric of them at the chosen threshold."""

    scores: np.ndarray
    metrics: dict[str, float]


@dataclass(frozen=True)
class ModelCard:
    """What a model needs beside its weights: inputs in order, decision rule, lineage."""

    family: ModelFamily
    candidate: str
    hyperparams: dict[str, HyperValue]
    features: list[str]
    threshold: float
    train_start: str
    train_end: str
    test_start: str
    test_end: str
    data_version: str

    @classmethod
    def of(cls, selection: Selection, features: list[str], data_version: str) -> ModelCard:
        return cls(
            family=selection.candidate.family,
            candidate=selection.candidate.name,
            hyperparams=dict(selection.candidate.hyperparams),
            features=list(features),
            threshold=float(selection.threshold),
            data_version=data_version,
            **selection.split.dates(),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelCard:
        return cls(**{field.name: values[field.name] for field in dataclasses.fields(cls)})


@dataclass(frozen=True)
class TrainingResult:
    """A finished run: the data it read, the parameters, the selection and its test scores."""

    source: DataSource
    params: Params
    selection: Selection
    evaluation: Evaluation

    @property
    def features(self) -> list[str]:
        return feature_columns(self.params.features)

    @property
    def card(self) -> ModelCard:
        return ModelCard.of(self.selection, self.features, self.source.version)


def load_raw(source: DataSource) -> pl.DataFrame:
    return read_raw(source.raw_dir)


def validate_batch(raw: pl.DataFrame, params: ValidateParams) -> None:
    """Raise `BatchRejected` naming every broken rule; nothing downstream runs on bad data."""
    validate_raw(raw, max_fraud_rate=params.max_fraud_rate)


def featurise(raw: pl.DataFrame, params: FeatureParams) -> pl.DataFrame:
    """Offline features of every transaction, checked before any model sees them."""
    features = build_features(raw, params)
    validate_features(features, params)
    return features


def select(features: pl.DataFrame, params: Params) -> Selection:
    return select_model(features, feature_columns(params.features), params.train)


def evaluate_on_test(selection: Selection, params: Params) -> Evaluation:
    """Every metric of the selected model on the test period, at its cost-based threshold."""
    test = selection.split.test
    scores = fraud_scores(selection.model, test, feature_columns(params.features))
    return Evaluation(scores, _metrics(test, scores, selection.threshold, params))


def _metrics(
    frame: pl.DataFrame, scores: np.ndarray, threshold: float, params: Params
) -> dict[str, float]:
    return evaluate(
        frame,
        scores,
        threshold=threshold,
        cost_missed_fraud=params.train.cost_missed_fraud,
        cost_false_alarm=params.train.cost_false_alarm,
        k=params.train.top_k,
    )


def fairness_report(result: TrainingResult) -> SegmentReport:
    """Quality per customer segment of the test-period alerts (docs/fairness.md).

    Segments read each customer's history from the whole raw batch, so a test-period
    customer's tenure and habits reach back before the training window.
    """
    alerts = result.evaluation.scores >= result.selection.threshold
    return segment_report(
        load_raw(result.source), result.selection.split.test, alerts, result.params
    )


def train_bare(source: DataSource, params: Params) -> TrainingResult:
    """Every step in a row, with no orchestration or tracking around them."""
    raw = load_raw(source)
    validate_batch(raw, params.validate_)
    selection = select(featurise(raw, params.features), params)
    return TrainingResult(source, params, selection, evaluate_on_test(selection, params))


# --- models on disk ------------------------------------------------------------------------


def native_model(model: Model) -> NativeModel:
    """The object to store and serve: XGBoost's booster, scikit-learn models as they are."""
    return model.get_booster() if isinstance(model, xgb.XGBClassifier) else model


def predict_scores(model: NativeModel, x: np.ndarray) -> np.ndarray:
    """Fraud probability of each row of X (float64, columns in the card's feature order)."""
    scores: np.ndarray
    if isinstance(model, xgb.Booster):
        scores = model.inplace_predict(x)
    else:
        scores = model.predict_proba(x)[:, 1]
    return scores


def save_model_dir(model: Model, card: ModelCard, out: Path) -> None:
    """Write the native model and its card into OUT, replacing what was there."""
    import skops.io

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    native = native_model(model)
    if isinstance(native, xgb.Booster):
        native.save_model(out / _XGBOOST_FILE)
    else:
        skops.io.dump(native, out / _SKOPS_FILE)
    (out / MODEL_CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2) + "\n")


def load_model_dir(path: Path) -> tuple[NativeModel, ModelCard]:
    """The model and card `save_model_dir` wrote (load only folders you wrote yourself)."""
    import skops.io

    card = ModelCard.from_dict(json.loads((path / MODEL_CARD_FILE).read_text()))
    if (path / _XGBOOST_FILE).exists():
        return xgb.Booster(model_file=str(path / _XGBOOST_FILE)), card
    return skops.io.load(path / _SKOPS_FILE, trusted=SKOPS_TRUSTED_TYPES), card


def score_frame(model: NativeModel, card: ModelCard, frame: pl.DataFrame) -> np.ndarray:
    return predict_scores(model, inputs(frame, card.features))


def holdout_metrics(
    card: ModelCard, holdout: pl.DataFrame, scores: np.ndarray, params: Params
) -> dict[str, float]:
    """Every metric of a stored model's SCORES on HOLDOUT, at the model's own threshold."""
    return _metrics(holdout, scores, card.threshold, params)


def evaluate_model_dir(
    model_dir: Path, features: pl.DataFrame, params: Params
) -> tuple[dict[str, float], dict[str, pl.DataFrame]]:
    """Metrics and curves of a stored model on the test period of FEATURES.

    The test period comes from PARAMS, as in training; a model trained for another
    period is refused rather than scored on days it may have seen.
    """
    model, card = load_model_dir(model_dir)
    split = final_split(features, params.train)
    expected = split.dates()
    trained_for = {key: getattr(card, key) for key in expected}
    if trained_for != expected:
        raise ValueError(f"{model_dir} was trained for {trained_for}, params give {expected}")
    scores = score_frame(model, card, split.test)
    metrics = _metrics(split.test, scores, card.threshold, params)
    return metrics, curve_points(split.test[TX_FRAUD].to_numpy(), scores)


def curve_points(y: np.ndarray, scores: np.ndarray) -> dict[str, pl.DataFrame]:
    """Precision-recall and ROC curves as tables, for DVC plots; at most CURVE_POINTS rows."""
    precision, recall, _ = precision_recall_curve(y, scores)
    fpr, tpr, _ = roc_curve(y, scores)
    return {
        "pr": _thin(pl.DataFrame({"recall": recall, "precision": precision})),
        "roc": _thin(pl.DataFrame({"fpr": fpr, "tpr": tpr})),
    }


def _thin(curve: pl.DataFrame) -> pl.DataFrame:
    if curve.height <= CURVE_POINTS:
        return curve
    keep = np.unique(np.linspace(0, curve.height - 1, CURVE_POINTS).round().astype(int))
    return curve[keep]


# --- the record in MLflow ------------------------------------------------------------------


def feature_importance(model: Model, features: list[str]) -> dict[str, float]:
    """Each input's weight in the model: impurity or gain for trees, |coefficient| for LR.

    Logistic regression sees standardised inputs, so its coefficients compare.
    """
    if isinstance(model, Pipeline):
        values = np.abs(model[-1].coef_[0])
    else:
        values = model.feature_importances_
    return dict(zip(features, map(float, values), strict=True))


def reference_sample(result: TrainingResult, rows: int = REFERENCE_ROWS) -> pl.DataFrame:
    """Training-window and test-period rows with label and score: the monitoring baseline.

    A seeded sample, so the same run always gives the same reference. Training scores
    are in-sample; drift tests on scores should compare against the ``test`` period.
    """
    split, features = result.selection.split, result.features
    train_scores = fraud_scores(result.selection.model, split.train, features)
    periods = [
        ("train", split.train, train_scores),
        ("test", split.test, result.evaluation.scores),
    ]
    frames = [
        frame.select(*KEY_COLUMNS, *features).with_columns(
            pl.Series(SCORE, scores, dtype=pl.Float64), pl.lit(name).alias(PERIOD)
        )
        for name, frame, scores in periods
    ]
    both = pl.concat(frames)
    if both.height > rows:
        both = both.sample(n=rows, seed=result.params.train.seed)
    return both.sort(TX_DATETIME, maintain_order=True)
