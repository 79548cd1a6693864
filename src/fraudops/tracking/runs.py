"""A training run's record in MLflow: its tags, params, metrics, data, plots and model.

The one place a training run meets MLflow (the seam of ``fraudops.tracking``): the steps
in ``fraudops.modeling.steps`` compute, this module records what they computed.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import polars as pl
import xgboost as xgb

from fraudops.data.schema import TX_FRAUD
from fraudops.data.versioning import git_sha
from fraudops.fairness.segment_plots import segment_figure
from fraudops.fairness.segment_report import SegmentReport
from fraudops.modeling.candidates import Selection, inputs
from fraudops.modeling.plots import evaluation_figures, importance_figure
from fraudops.modeling.steps import (
    MODEL_CARD_FILE,
    SKOPS_TRUSTED_TYPES,
    NativeModel,
    TrainingResult,
    fairness_report,
    feature_importance,
    native_model,
    predict_scores,
    reference_sample,
)

DATA_VERSION_TAG = "fraudops.data_version"
DATA_FINGERPRINT_TAG = "fraudops.data_fingerprint"
DATA_REV_TAG = "fraudops.data_rev"
GIT_SHA_TAG = "fraudops.git_sha"
MODEL_FAMILY_TAG = "fraudops.model_family"
THRESHOLD_TAG = "fraudops.threshold"
#: Tells training runs from promotion runs in the one experiment.
RUN_TYPE_TAG = "fraudops.run_type"


@dataclass(frozen=True)
class LoggedRun:
    """A run in MLflow: its id, its model's ``models:/m-…`` URI and the tags it was given."""

    run_id: str
    model_uri: str
    tags: dict[str, str]


def run_params(result: TrainingResult) -> dict[str, str]:
    """Every parameter the run depends on, flattened for MLflow (values as strings)."""
    train = result.params.train.model_dump(mode="json", exclude={"candidates"})
    card = result.card
    params = {f"train.{key}": value for key, value in train.items()}
    params["train.candidates"] = json.dumps(
        result.params.train.model_dump(mode="json")["candidates"], sort_keys=True
    )
    params |= {
        f"features.{key}": value
        for key, value in result.params.features.model_dump(mode="json").items()
    }
    params |= {f"model.{key}": value for key, value in card.hyperparams.items()}
    params |= {
        "model.family": card.family,
        "model.candidate": card.candidate,
        "split.train_start": card.train_start,
        "split.train_end": card.train_end,
        "split.test_start": card.test_start,
        "split.test_end": card.test_end,
        "data.version": result.source.version,
        "data.rev": result.source.rev,
    }
    return {key: str(value) for key, value in params.items()}


def run_tags(result: TrainingResult, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Lineage tags: data version and contents, code version, model family, threshold."""
    tags = {
        RUN_TYPE_TAG: "training",
        DATA_VERSION_TAG: result.source.version,
        DATA_FINGERPRINT_TAG: result.source.fingerprint,
        GIT_SHA_TAG: git_sha(),
        MODEL_FAMILY_TAG: result.selection.candidate.family,
        THRESHOLD_TAG: repr(float(result.selection.threshold)),
    }
    if result.source.rev:
        tags[DATA_REV_TAG] = result.source.rev
    return tags | dict(extra or {})


def validation_metrics(selection: Selection) -> dict[str, float]:
    """The winner's mean (and spread) over the validation folds, prefixed ``val_``.

    The winner need not top the table: near-ties go to the model cheapest to serve.
    """
    table = selection.validation
    winner = table.row(by_predicate=pl.col("candidate") == selection.candidate.name, named=True)
    return {f"val_{key}": float(value) for key, value in winner.items() if _is_number(value)}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def log_training_run(
    result: TrainingResult, *, tags: Mapping[str, str] | None = None, run_name: str | None = None
) -> LoggedRun:
    """Record RESULT as one run of the active MLflow experiment; return its model URI.

    Params, test and validation metrics, lineage tags, the training and test data as
    MLflow datasets, evaluation plots, the per-segment fairness tables and plot, the
    candidate table, the model card, the reference sample, and the native model with
    signature and input example. Call
    `fraudops.tracking.registry.configure_mlflow` first; an unreachable server raises
    `RegistryUnavailable`.
    """
    import mlflow

    from fraudops.tracking.registry import outage_named

    all_tags = run_tags(result, tags)
    with outage_named(mlflow.get_tracking_uri()), mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags(all_tags)
        mlflow.log_params(run_params(result))
        mlflow.log_metrics(result.evaluation.metrics | validation_metrics(result.selection))
        _log_datasets(result)
        _log_figures(result)
        log_segment_report(fairness_report(result))
        _log_files(result)
        model_uri = _log_model(result)
    return LoggedRun(run.info.run_id, model_uri, all_tags)


def _log_datasets(result: TrainingResult) -> None:
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas  # mlflow.data only gains it at run time

    split, columns = result.selection.split, [*result.features, TX_FRAUD]
    version = result.source.version.removesuffix(".dir")
    for context, frame in (("training", split.train), ("testing", split.test)):
        with _quiet_mlflow_hints():
            dataset = from_pandas(
                frame.select(columns).to_pandas(),
                source=str(result.source.raw_dir.resolve()),
                name=f"transactions-{version[:12]}-{context}",
                targets=TX_FRAUD,
            )
            mlflow.log_input(dataset, context=context)


def _log_figures(result: TrainingResult) -> None:
    import mlflow

    y = result.selection.split.test[TX_FRAUD].to_numpy()
    figures = evaluation_figures(y, result.evaluation.scores, result.selection.threshold)
    importance = feature_importance(result.selection.model, result.features)
    figures["feature_importance.png"] = importance_figure(importance)
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"plots/{name}")


#: Artifacts of the fairness report: MLflow tables (JSON) and the figure.
FAIRNESS_SEGMENTS = "fairness/segments.json"
FAIRNESS_GAPS = "fairness/gaps.json"
FAIRNESS_PLOT = "plots/fairness_segments.png"


def log_segment_report(report: SegmentReport) -> None:
    """Per-segment metrics and gaps as MLflow tables of the active run, so the UI can
    compare runs on them (training and monitoring runs alike), and the figure."""
    import mlflow

    mlflow.log_table(report.table.to_pandas(), artifact_file=FAIRNESS_SEGMENTS)
    mlflow.log_table(report.gaps.to_pandas(), artifact_file=FAIRNESS_GAPS)
    mlflow.log_figure(segment_figure(report.table), FAIRNESS_PLOT)


def load_segment_report(run_id: str) -> SegmentReport | None:
    """The segment report logged with run RUN_ID; None for a run logged without one."""
    from mlflow import MlflowClient

    stored = {Path(item.path).name for item in MlflowClient().list_artifacts(run_id, "fairness")}
    if not {Path(FAIRNESS_SEGMENTS).name, Path(FAIRNESS_GAPS).name} <= stored:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        table, gaps = (
            _read_table(download_run_artifact(run_id, artifact, Path(scratch)))
            for artifact in (FAIRNESS_SEGMENTS, FAIRNESS_GAPS)
        )
    return SegmentReport(table, gaps)


def _read_table(path: Path) -> pl.DataFrame:
    """An MLflow table artifact (pandas' ``split`` JSON) as a frame; nulls stay nulls."""
    split = json.loads(path.read_text())
    return pl.DataFrame(
        split["data"], schema=split["columns"], orient="row", infer_schema_length=None
    )


def _log_files(result: TrainingResult) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "validation").mkdir()
        result.selection.validation.write_csv(root / "validation" / "candidates.csv")
        (root / "reference").mkdir()
        reference_sample(result).write_parquet(root / "reference" / "reference.parquet")
        (root / MODEL_CARD_FILE).write_text(json.dumps(result.card.to_dict(), indent=2))
        mlflow.log_artifacts(folder)


def _log_model(result: TrainingResult) -> str:
    from mlflow.models import infer_signature

    train, features = result.selection.split.train, result.features
    example = train.head(5).select(features).to_pandas()
    native = native_model(result.selection.model)
    signature = infer_signature(example, predict_scores(native, inputs(train.head(5), features)))
    common = {
        "name": "model",
        "signature": signature,
        "input_example": example,
        "metadata": result.card.to_dict(),
    }
    with _quiet_mlflow_hints():
        info = _log_native_model(native, common)
    model_uri: str = info.model_uri
    return model_uri


def _log_native_model(native: NativeModel, common: dict[str, Any]) -> Any:
    import mlflow

    if isinstance(native, xgb.Booster):
        return mlflow.xgboost.log_model(native, pip_requirements=_requirements("xgboost"), **common)
    return mlflow.sklearn.log_model(
        native,
        pip_requirements=_requirements("scikit-learn", "skops"),
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        pyfunc_predict_fn="predict_proba",
        **common,
    )


@contextmanager
def _quiet_mlflow_hints() -> Iterator[None]:
    """Silence MLflow hints that do not apply here, so real warnings stay visible.

    MLflow registers two local dataset sources and warns about the ambiguity; it hints at
    integer columns (our label has no missing values); and it checks the input example
    by calling the model on a DataFrame, which scikit-learn (fitted on arrays) remarks on.
    """
    with warnings.catch_warnings():
        for message in (
            "The specified dataset source can be interpreted in multiple ways",
            "Hint: Inferred schema contains integer column",
            "X has feature names",
        ):
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def _requirements(*packages: str) -> list[str]:
    """Pinned to what is installed; MLflow would otherwise spend 20+ s inferring them."""
    return [f"{name}=={installed_version(name)}" for name in ("numpy", "pandas", *packages)]


class RunLog:
    """What a flow writes into the MLflow run it is recording: the calls it needs, no more."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def tags(self, tags: Mapping[str, str]) -> None:
        import mlflow

        mlflow.set_tags(dict(tags))

    def params(self, params: Mapping[str, str]) -> None:
        import mlflow

        mlflow.log_params(dict(params))

    def metrics(self, metrics: Mapping[str, float]) -> None:
        import mlflow

        mlflow.log_metrics(dict(metrics))

    def document(self, document: Mapping[str, Any], name: str) -> None:
        import mlflow

        mlflow.log_dict(dict(document), name)

    def folder(self, folder: Path, artifact_path: str) -> None:
        import mlflow

        mlflow.log_artifacts(str(folder), artifact_path=artifact_path)

    def segments(self, report: SegmentReport) -> None:
        log_segment_report(report)


@contextmanager
def recorded_run(run_name: str, *, failed: bool = False) -> Iterator[RunLog]:
    """A run of the active experiment, open while the block writes it.

    It ends ``FINISHED``, or ``FAILED`` when FAILED is set (a failure put on record) or the
    block raises; an unreachable tracking server raises ``RegistryUnavailable``.
    """
    import mlflow

    from fraudops.tracking.registry import outage_named

    with outage_named(mlflow.get_tracking_uri()):
        run = mlflow.start_run(run_name=run_name)
        status = "FAILED" if failed else "FINISHED"
        try:
            yield RunLog(run.info.run_id)
        except BaseException:
            status = "FAILED"
            raise
        finally:
            mlflow.end_run(status=status)


def download_run_artifact(run_id: str, artifact_path: str, folder: Path) -> Path:
    """One artifact of run RUN_ID, downloaded into FOLDER; its local path."""
    import mlflow

    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(folder)
        )
    )
