"""The training flow: each step of `fraudops.modeling.steps` as a Prefect task.

Order matters for failure: the flow first checks that MLflow answers (so an outage costs
seconds, not a training run), and validates the data before any feature or model is
computed (so a bad batch registers nothing and the champion stays).

Steps that touch files or servers retry. Features are cached on the data's content hash,
the feature parameters and the feature code, so retraining the same data with new model
parameters skips them: the cache record (under ``PREFECT_RESULTS_LOCAL_STORAGE_PATH``) names
a feature file under ``FRAUDOPS_HOME/features``. Every other task takes large frames as
inputs and opts out of Prefect's default input hashing.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl
from prefect import flow, get_run_logger, task

import fraudops.features.definitions
from fraudops.config import (
    FeatureParams,
    Params,
    Settings,
    ValidateParams,
    get_settings,
    load_params,
)
from fraudops.data.validation import BatchRejected
from fraudops.modeling import steps
from fraudops.modeling.candidates import Selection
from fraudops.modeling.warm_start import WarmStartUnavailable, warm_start_selection
from fraudops.scale import dask_training
from fraudops.scale.cluster import dask_client
from fraudops.tracking import runs
from fraudops.tracking.logged_models import load_registered_model
from fraudops.tracking.registry import (
    CHAMPION,
    MlflowClient,
    configure_mlflow,
    register,
    version_by_alias,
)
from pipelines.tasks import io_task, step_task

DATA_DVC_FILE = "data.dvc"
#: Folder under FRAUDOPS_HOME holding the cached feature files.
FEATURES_STORE = "features"
#: Prefect's loggers of task and flow runs, which log each failure with its traceback.
RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")
#: Tags of how the model learnt: ``full`` or ``warm_start`` (from which champion version),
#: and why a warm start that was asked for became a full retrain.
LEARNING_MODE_TAG = "fraudops.learning_mode"
WARM_START_FROM_TAG = "fraudops.warm_start_from"
WARM_START_SKIPPED_TAG = "fraudops.warm_start_skipped"

TrainingMode = Literal["full", "warm_start"]


class RejectedDataFilter(logging.Filter):
    """Keeps the message but drops the traceback of a run that failed on rejected data.

    A rejected batch is the data's fault, not the code's: its message names every broken
    rule and file. Prefect logs each failed run with its traceback, which buries that
    message under library frames in `fraudops train`, `fraudops retrain` and the Prefect UI.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], BatchRejected):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_rejected_data() -> None:
    """Install ``RejectedDataFilter`` on Prefect's run loggers, once per process."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(known, RejectedDataFilter) for known in logger.filters):
            logger.addFilter(RejectedDataFilter())


def retry_unless_rejected(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry a failed read, unless the data was rejected: reading it again cannot help."""
    return not isinstance(state.data, BatchRejected)


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training run produced, as callers (CLI, retraining) report it."""

    run_id: str
    model_uri: str
    model_name: str
    version: str
    aliases: list[str]
    candidate: str
    data_version: str
    metrics: dict[str, float]
    #: How the model learnt: ``full``, or ``warm_start`` when the champion was continued.
    learning_mode: str = "full"


@io_task("connect to MLflow")
def connect_tracking(settings: Settings) -> MlflowClient:
    return configure_mlflow(settings)


@io_task("locate data")
def locate_data(rev: str | None, project: Path, settings: Settings) -> steps.DataSource:
    """The workspace data, or the version DVC recorded at git revision REV."""
    if rev is None:
        source = steps.workspace_data(settings.raw_dir, project / DATA_DVC_FILE)
    else:
        cache = settings.home / "data-versions"
        source = steps.data_at_rev(project, rev, cache, DATA_DVC_FILE)
    get_run_logger().info(
        "data %s (version %s) from %s", source.fingerprint[:12], source.version, source.raw_dir
    )
    return source


@io_task("load data", retry_condition_fn=retry_unless_rejected)
def load_data(source: steps.DataSource) -> pl.DataFrame:
    """The raw rows; a file that cannot be read as raw data raises ``BatchRejected``."""
    return steps.load_raw(source)


@step_task("validate data")
def validate_data(raw: pl.DataFrame, params: ValidateParams) -> None:
    steps.validate_batch(raw, params)
    get_run_logger().info("%s transactions passed validation", f"{raw.height:,}")


def _features_key(fingerprint: str, params: FeatureParams, store: Path) -> str:
    """Data contents + feature parameters + feature code + where the file lives."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (
        fingerprint,
        params.model_dump_json(),
        inspect.getsource(fraudops.features.definitions),
    ):
        digest.update(part.encode())
    digest.update(str(store.resolve()).encode())
    return f"features-{digest.hexdigest()}"


def _features_cache_key(_context: Any, arguments: dict[str, Any]) -> str:
    return _features_key(arguments["fingerprint"], arguments["params"], arguments["store"])


@task(
    name="build features",
    cache_key_fn=_features_cache_key,
    persist_result=True,
    result_serializer="json",
)
def build_features(raw: pl.DataFrame, fingerprint: str, params: FeatureParams, store: Path) -> str:
    """Write the features of RAW (whose contents FINGERPRINT names) under STORE; their path.

    The cache keeps the path, not the frame: Prefect would pickle and base64 a 260 MB frame
    into its JSON result record (seconds each way), where a zstd Arrow file takes 56 MB
    and reads back in a third of a second.
    """
    features = steps.featurise(raw, params)
    path = store / f"{_features_key(fingerprint, params, store)}.arrow"
    partial = path.with_suffix(".partial")
    store.mkdir(parents=True, exist_ok=True)
    features.write_ipc(partial, compression="zstd")
    partial.replace(path)
    return str(path)


@io_task("read features")
def read_features(path: str) -> pl.DataFrame:
    return pl.read_ipc(path)


def features_of(raw: pl.DataFrame, source: steps.DataSource, params: Params) -> pl.DataFrame:
    """The features of SOURCE's data, built once per contents, parameters and feature code."""
    arguments = (raw, source.fingerprint, params.features, get_settings().home / FEATURES_STORE)
    path = build_features(*arguments)
    if not Path(path).exists():  # the cache record outlived its file: build it again
        path = build_features.with_options(refresh_cache=True)(*arguments)
    return read_features(path)


@step_task("select model")
def select_model(features: pl.DataFrame, params: Params) -> Selection:
    """Time split, prequential validation of every candidate, refit of the winner, threshold.

    With ``FRAUDOPS_DASK_ADDRESS`` set, the fits run on that Dask cluster.
    """
    with dask_client(get_settings()) as cluster:
        selection = dask_training.select(features, params, cluster)
    get_run_logger().info(
        "selected %s (validation average precision %.4f), threshold %.4f",
        selection.candidate.name,
        runs.validation_metrics(selection)["val_average_precision"],
        selection.threshold,
    )
    return selection


@dataclass(frozen=True)
class Champion:
    """The registered champion a warm start continues: its version, model and card."""

    version: str
    model: steps.NativeModel
    card: steps.ModelCard


@io_task("load champion")
def load_champion(client: MlflowClient, settings: Settings) -> Champion | None:
    """The current champion from the registry, or None when there is none yet."""
    registered = version_by_alias(client, settings.model_name, CHAMPION)
    if registered is None:
        return None
    uri = f"models:/{settings.model_name}/{registered.version}"
    with tempfile.TemporaryDirectory() as folder:
        model, card = load_registered_model(uri, Path(folder))
    return Champion(str(registered.version), model, card)


@step_task("continue the champion")
def continue_champion(
    features: pl.DataFrame, params: Params, champion: Champion | None
) -> Selection | str:
    """The champion with more boosting rounds on its unseen labelled days, or why not."""
    if champion is None:
        return "no champion to continue"
    try:
        selection = warm_start_selection(champion.model, champion.card, features, params)
    except WarmStartUnavailable as why:
        return str(why)
    get_run_logger().info(
        "version %s continued with %d rounds on %s..%s",
        champion.version,
        params.learning.warm_start_rounds,
        selection.split.train_start,
        selection.split.train_end,
    )
    return selection


def _learn(
    features: pl.DataFrame, params: Params, mode: TrainingMode, client: MlflowClient
) -> tuple[Selection, dict[str, str]]:
    """The model of MODE and the tags that say how it learnt; a warm start that cannot
    run (no XGBoost champion, no new labelled day) becomes a full retrain, saying why."""
    tags = {LEARNING_MODE_TAG: "full"}
    if mode == "warm_start":
        champion = load_champion(client, get_settings())
        continued = continue_champion(features, params, champion)
        if isinstance(continued, Selection) and champion is not None:
            tags = {LEARNING_MODE_TAG: "warm_start", WARM_START_FROM_TAG: champion.version}
            return continued, tags
        get_run_logger().info("no warm start (%s): a full retrain instead", continued)
        tags[WARM_START_SKIPPED_TAG] = str(continued)
    return select_model(features, params), tags


@step_task("evaluate on test")
def evaluate_model(selection: Selection, params: Params) -> steps.Evaluation:
    evaluation = steps.evaluate_on_test(selection, params)
    shown = ("roc_auc", "average_precision", f"card_precision_at_{params.train.top_k}")
    get_run_logger().info(
        "test %s", ", ".join(f"{name} {evaluation.metrics[name]:.4f}" for name in shown)
    )
    return evaluation


@io_task("log to MLflow")
def log_run(result: steps.TrainingResult, tags: dict[str, str]) -> runs.LoggedRun:
    return runs.log_training_run(result, tags=tags)


@io_task("register model")
def register_model(
    client: MlflowClient, logged: runs.LoggedRun, name: str, tags: dict[str, str]
) -> tuple[str, list[str]]:
    """Register as ``challenger`` (and ``champion`` if there is none); return version, aliases.

    The version carries the run's lineage tags, so the registry alone traces it back.
    """
    version = register(client, logged.model_uri, name, tags)
    get_run_logger().info("registered %s version %s %s", name, version.version, version.aliases)
    return str(version.version), list(version.aliases)


@flow(name="training")
def training_flow(
    rev: str | None = None,
    tags: dict[str, str] | None = None,
    params_path: Path | None = None,
    project: Path | None = None,
    learning_mode: TrainingMode = "full",
) -> TrainingOutcome:
    """Train on the workspace data (or the DVC version at git revision REV), log, register.

    TAGS are added to the MLflow run and the model version (a retraining trigger says why
    it ran). PARAMS_PATH overrides the settings' params.yaml; PROJECT is the repository
    root holding ``data.dvc`` (default: the working directory). LEARNING_MODE ``full``
    searches and fits from scratch; ``warm_start`` continues the champion
    (`fraudops.modeling.warm_start`), or retrains in full when it cannot.
    """
    quiet_rejected_data()
    settings = get_settings()
    params = load_params(params_path or settings.params_path)
    client = connect_tracking(settings)
    source = locate_data(rev, project or Path.cwd(), settings)
    raw = load_data(source)
    validate_data(raw, params.validate_)
    selection, how = _learn(features_of(raw, source, params), params, learning_mode, client)
    evaluation = evaluate_model(selection, params)
    result = steps.TrainingResult(source, params, selection, evaluation)
    logged = log_run(result, {**(tags or {}), **how})
    version, aliases = register_model(client, logged, settings.model_name, logged.tags)
    return TrainingOutcome(
        run_id=logged.run_id,
        model_uri=logged.model_uri,
        model_name=settings.model_name,
        version=version,
        aliases=aliases,
        candidate=selection.candidate.name,
        data_version=source.version,
        metrics=evaluation.metrics,
        learning_mode=how[LEARNING_MODE_TAG],
    )
