"""The `fraudops` command: one entry point for every user action.

Heavy modules (Polars, MLflow, Prefect, FastAPI, Evidently) are imported inside each
command so that ``fraudops --help`` answers at once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from fraudops.config import ABParams, Scenario, get_settings, load_params

if TYPE_CHECKING:
    import pandas as pd
    from rich.table import Table
    from sqlalchemy import Engine

    from fraudops.experiments.abtest import ReportWindow

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.splitlines()[0])
console = Console(stderr=True)

DATA_DVC_FILE = Path("data.dvc")


@contextmanager
def progress_steps(total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar over the named steps of a long command; call the result per step."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("", total=total)
        started = False

        def step(description: str) -> None:
            nonlocal started
            if started:
                progress.advance(task)
            started = True
            progress.update(task, description=description)

        yield step
        progress.update(task, completed=total, description="done")


def fail(message: str) -> typer.Exit:
    """Print MESSAGE as an error; raise the result to exit with status 1."""
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=1)


#: How Prefect words a temporary server that did not answer in time (a plain RuntimeError).
_PREFECT_STARTUP_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API"


def main() -> None:
    """The ``fraudops`` command: the Typer app, with Prefect's startup timeout explained.

    Any flow can be the first to start Prefect's temporary server, and on a busy machine
    it may not answer in time; the user then needs the setting to change, not a traceback.
    """
    try:
        app()
    except RuntimeError as exc:
        if _PREFECT_STARTUP_TIMEOUT not in str(exc):
            raise
        timeout = get_settings().prefect_startup_timeout_s
        console.print(
            f"[bold red]error:[/] Prefect's temporary server did not start within {timeout} s. "
            "Set FRAUDOPS_PREFECT_STARTUP_TIMEOUT_S higher, or start a server "
            "(`prefect server start`) and set FRAUDOPS_PREFECT_API_URL to its API URL."
        )
        raise SystemExit(1) from None


@app.command()
def generate(
    customers: Annotated[int | None, typer.Option(help="Number of customers.")] = None,
    terminals: Annotated[int | None, typer.Option(help="Number of terminals.")] = None,
    days: Annotated[int | None, typer.Option(help="Number of days to simulate.")] = None,
    start: Annotated[dt.datetime | None, typer.Option(formats=["%Y-%m-%d"])] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    scenario: Annotated[Scenario | None, typer.Option(help="Drift scenario.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default data/raw).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace days already written.")] = False,
    version: Annotated[bool, typer.Option(help="Record a DVC data version of data/raw.")] = True,
) -> None:
    """Simulate transactions into day-partitioned Parquet; unset options come from params.yaml."""
    from fraudops.data.datasets import write_raw
    from fraudops.data.simulate import simulate
    from fraudops.data.versioning import record_data_version

    overrides = {
        "customers": customers,
        "terminals": terminals,
        "days": days,
        "start": start.date() if start else None,
        "seed": seed,
        "scenario": scenario,
    }
    params = load_params().simulate.model_copy(
        update={key: value for key, value in overrides.items() if value is not None}
    )
    out = out or get_settings().raw_dir
    versioned = version and out.resolve() == get_settings().raw_dir.resolve()
    with progress_steps(3 if versioned else 2) as step:
        step(f"simulating {params.days} days")
        transactions = simulate(params)
        step(f"writing {out}")
        try:
            write_raw(transactions, out, overwrite=overwrite)
        except FileExistsError as exc:
            raise fail(f"{exc} (pass --overwrite to replace)") from exc
        if versioned:
            step("recording the DVC data version")
            data_hash = record_data_version(DATA_DVC_FILE)
    fraud_rate = transactions["tx_fraud"].mean()
    console.print(f"{transactions.height:,} transactions, fraud rate {fraud_rate:.3%} → {out}")
    if versioned:
        console.print(f"data version {data_hash} recorded in {DATA_DVC_FILE}")


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="A data/raw folder or one day=… partition.")],
    report: Annotated[Path | None, typer.Option(help="Write a JSON summary here.")] = None,
) -> None:
    """Check a raw batch against the schema and rules; exit 1 naming every failed rule."""
    from fraudops.data.datasets import read_raw
    from fraudops.data.schema import TX_FRAUD
    from fraudops.data.validation import BatchRejected, validate_raw

    try:
        batch = read_raw(path)
        validate_raw(batch, max_fraud_rate=load_params().validate_.max_fraud_rate)
    except (BatchRejected, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    summary = {
        "rows": batch.height,
        "days": batch["day"].n_unique(),
        "fraud_rate": round(float(batch[TX_FRAUD].mean()), 6),
    }
    if report:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"[green]valid[/]: {summary['rows']:,} rows over {summary['days']} days")


@app.command()
def featurize(
    raw: Annotated[Path | None, typer.Option(help="Raw data folder (default data/raw).")] = None,
    out: Annotated[Path, typer.Option(help="Feature Parquet file.")] = Path(
        "data/features/features.parquet"
    ),
) -> None:
    """Compute the offline features of every transaction and validate them."""
    from fraudops.data.datasets import read_raw
    from fraudops.data.validation import BatchRejected, validate_features
    from fraudops.features.definitions import build_features

    params = load_params().features
    with progress_steps(3) as step:
        try:
            step("reading raw transactions")
            transactions = read_raw(raw or get_settings().raw_dir)
            step("computing features")
            features = build_features(transactions, params)
            step("validating features")
            validate_features(features, params)
        except (BatchRejected, FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    features.write_parquet(out)
    console.print(f"{features.height:,} feature rows → {out}")


def _use_prefect() -> None:
    """Point Prefect at the configured server and keep its results under FRAUDOPS_HOME.

    Prefect reads its settings once, at import, so this runs before a flow is imported.
    Without an API URL, Prefect runs flows against a temporary local server, given
    ``prefect_startup_timeout_s`` to start (``main`` explains a timeout).
    """
    settings = get_settings()
    if settings.prefect_api_url:
        os.environ.setdefault("PREFECT_API_URL", settings.prefect_api_url)
    os.environ.setdefault(
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(settings.prefect_startup_timeout_s)
    )
    results = (settings.home / "prefect-results").resolve()
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(results))
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "fraudops")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise fail(f"tag {pair!r} is not KEY=VALUE")
        tags[key] = value
    return tags


FEATURES_FILE = Path("data/features/features.parquet")


@app.command()
def train(
    rev: Annotated[
        str | None, typer.Option(help="Train on the data DVC recorded at this git revision.")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE tag for the run and model version.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the model here from --features instead (the DVC stage)."),
    ] = None,
    features: Annotated[Path, typer.Option(help="Feature file read with --out.")] = FEATURES_FILE,
) -> None:
    """Train, evaluate, log to MLflow and register a challenger (the Prefect training flow).

    With --out: select and fit from a feature file into a folder, without Prefect or MLflow.
    """
    from fraudops.data.validation import BatchRejected
    from fraudops.data.versioning import VersioningError
    from fraudops.tracking.registry import RegistryError

    if out is not None:
        if rev is not None:
            raise fail("--rev reads raw data through the flow; it cannot go with --out")
        _train_to_folder(features, out)
        return
    _use_prefect()
    from pipelines.training import training_flow

    try:
        outcome = training_flow(rev=rev, tags=_tags(tag or []))
    except (BatchRejected, RegistryError, VersioningError, FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"[green]registered[/] {outcome.model_name} version {outcome.version} "
        f"({', '.join(outcome.aliases)}): {outcome.candidate}"
    )
    top_k = load_params().train.top_k
    shown = ("roc_auc", "average_precision", f"card_precision_at_{top_k}", "threshold", "recall")
    console.print("  ".join(f"{key} {outcome.metrics[key]:.4f}" for key in shown))
    console.print(f"MLflow run {outcome.run_id}, data version {outcome.data_version}")


def _train_to_folder(features_path: Path, out: Path) -> None:
    import polars as pl

    from fraudops.features.definitions import feature_columns
    from fraudops.modeling.steps import ModelCard, recorded_version, save_model_dir, select

    params = load_params()
    with progress_steps(3) as step:
        step("reading features")
        try:
            frame = pl.read_parquet(features_path)
        except FileNotFoundError as exc:
            raise fail(f"no feature file at {features_path} (run `fraudops featurize`)") from exc
        step("selecting and fitting")
        try:
            selection = select(frame, params)
        except ValueError as exc:
            raise fail(str(exc)) from exc
        step(f"writing {out}")
        version = recorded_version(DATA_DVC_FILE, get_settings().raw_dir)
        card = ModelCard.of(selection, feature_columns(params.features), version)
        save_model_dir(selection.model, card, out)
    console.print(f"{selection.candidate.name}, threshold {selection.threshold:.4f} → {out}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Model folder written by `train --out`.")] = Path(
        "models"
    ),
    features: Annotated[Path, typer.Option(help="Feature file.")] = FEATURES_FILE,
    metrics: Annotated[Path, typer.Option(help="Metrics JSON to write.")] = Path("metrics.json"),
    plots: Annotated[Path, typer.Option(help="Folder for curve tables.")] = Path("plots"),
) -> None:
    """Score a model folder on the test period: metrics JSON and PR/ROC tables for DVC."""
    import polars as pl

    from fraudops.modeling.steps import evaluate_model_dir

    params = load_params()
    try:
        values, curves = evaluate_model_dir(model, pl.read_parquet(features), params)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    plots.mkdir(parents=True, exist_ok=True)
    for name, table in curves.items():
        table.write_csv(plots / f"{name}.csv")
    shown = ("roc_auc", "average_precision", f"card_precision_at_{params.train.top_k}")
    console.print("  ".join(f"{key} {values[key]:.4f}" for key in shown) + f" → {metrics}")


@app.command()
def promote(
    version: Annotated[
        str | None, typer.Option(help="Judge this version instead of the challenger.")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Make --version champion without the holdout gate.")
    ] = False,
    reason: Annotated[str, typer.Option(help="Why, for a forced promotion.")] = "manual",
) -> None:
    """Compare the challenger with the champion on the holdout; promote it if not worse."""
    from mlflow.exceptions import MlflowException

    from fraudops.data.validation import BatchRejected
    from fraudops.tracking.registry import RegistryError

    expected = (BatchRejected, RegistryError, MlflowException, LookupError, OSError, ValueError)

    if force and version is None:
        raise fail("--force needs --version")
    try:
        if force:
            _force_promote(version, reason)
            return
        _use_prefect()
        from pipelines.promotion import promotion_flow

        outcome = promotion_flow(challenger_version=version)
    except expected as exc:
        raise fail(str(exc)) from exc
    colour = {"promoted": "green", "rejected": "yellow"}.get(outcome.outcome, "blue")
    console.print(f"[{colour}]{outcome.outcome}[/] version {outcome.challenger}: {outcome.reason}")
    console.print(f"champion is version {outcome.champion}")


def _force_promote(version: str, reason: str) -> None:
    from fraudops.tracking.registry import configure_mlflow
    from fraudops.tracking.registry import promote as promote_version

    settings = get_settings()
    promoted = promote_version(
        configure_mlflow(settings), settings.model_name, version, f"forced: {reason}"
    )
    console.print(f"[green]promoted[/] version {promoted.version} by hand: champion now")


@app.command()
def rollback(
    reason: Annotated[str, typer.Option(help="Why, recorded on the version.")] = "manual rollback",
) -> None:
    """Move champion back to the version it replaced."""
    from fraudops.tracking.registry import RegistryError, configure_mlflow
    from fraudops.tracking.registry import rollback as roll_back

    settings = get_settings()
    try:
        restored = roll_back(configure_mlflow(settings), settings.model_name, reason)
    except RegistryError as exc:
        raise fail(str(exc)) from exc
    console.print(f"[green]rolled back[/]: version {restored.version} is champion again")


@app.command()
def backfill(
    raw: Annotated[Path | None, typer.Option(help="Raw data folder (default data/raw).")] = None,
    until: Annotated[
        dt.datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Last day to load (default: the last in RAW)."),
    ] = None,
) -> None:
    """Load the online feature store from raw data, so serving can start mid-stream."""
    from fraudops.data.datasets import read_raw
    from fraudops.data.validation import BatchRejected
    from fraudops.features.online_store import OnlineStoreError, open_online_store

    settings = get_settings()
    params = load_params().features
    with progress_steps(2) as step:
        try:
            step("reading raw transactions")
            transactions = read_raw(raw or settings.raw_dir)
            step("writing the online store")
            store = open_online_store(
                settings.feature_store_url, params, namespace=settings.online_store_namespace
            )
            with store:
                summary = store.backfill(transactions, until.date() if until else None)
        except (BatchRejected, OnlineStoreError, FileNotFoundError, ValueError) as exc:
            raise fail(str(exc)) from exc
    console.print(
        f"state as of the end of {summary.until}: {summary.customer_buckets:,} customer and "
        f"{summary.terminal_buckets:,} terminal buckets, {summary.indexed_transactions:,} "
        f"transactions indexed ({summary.pending_labels:,} awaiting labels)"
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (one per core).")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the scoring API (champion, A/B and shadow per routing.yaml) until stopped."""
    from serving.server import run

    run(host, port, workers, log_level)


report_app = typer.Typer(
    no_args_is_help=True, help="Live evidence from the prediction log: shadow and A/B reports."
)
app.add_typer(report_app, name="report")

_MOMENT_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]
Since = Annotated[
    dt.datetime | None,
    typer.Option(formats=_MOMENT_FORMATS, help="Window start (UTC, or transaction time)."),
]
Until = Annotated[
    dt.datetime | None, typer.Option(formats=_MOMENT_FORMATS, help="Window end, exclusive.")
]
Last = Annotated[int | None, typer.Option(min=1, help="Only the newest N served predictions.")]
ByTransactionTime = Annotated[
    bool, typer.Option(help="Window on the transactions' own clock instead of logging time.")
]
LabelsBy = Annotated[
    dt.datetime | None,
    typer.Option(formats=_MOMENT_FORMATS, help="Use labels received by then (default: now)."),
]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON.")]


@report_app.command("shadow")
def report_shadow(
    since: Since = None,
    until: Until = None,
    last: Last = None,
    by_transaction_time: ByTransactionTime = False,
    labels_by: LabelsBy = None,
    shadow_version: Annotated[
        str | None, typer.Option(help="Shadow model version (default: the newest logged).")
    ] = None,
    json_out: JsonOut = None,
) -> None:
    """Served model vs its shadow on the same requests: agreement, flips, latency."""
    from fraudops.experiments.shadow_report import analyse_shadow, read_shadow_window, shadow_table

    params = load_params()
    window = _report_window(since, until, last, by_transaction_time, labels_by)
    frame = _read_prediction_log(lambda engine: read_shadow_window(engine, window))
    report = analyse_shadow(
        frame, params.ab, params.train, shadow_version=shadow_version, window=window
    )
    _show_report(shadow_table(report), report.model_dump_json(indent=2), json_out)


@report_app.command("ab")
def report_ab(
    since: Since = None,
    until: Until = None,
    last: Last = None,
    by_transaction_time: ByTransactionTime = False,
    labels_by: LabelsBy = None,
    control: Annotated[str | None, typer.Option(help="Control arm (default: params.yaml).")] = None,
    treatment: Annotated[
        str | None, typer.Option(help="Treatment arm (default: params.yaml).")
    ] = None,
    json_out: JsonOut = None,
) -> None:
    """Per-arm metrics with intervals, tests, the sample needed, and a recommendation."""
    from pydantic import ValidationError

    from fraudops.experiments.abtest import ab_table, analyse_ab

    params = load_params()
    arms = {"control_arm": control, "treatment_arm": treatment}
    try:
        ab = ABParams.model_validate(
            params.ab.model_dump() | {key: value for key, value in arms.items() if value}
        )
    except ValidationError as exc:
        raise fail("; ".join(error["msg"] for error in exc.errors())) from exc
    window = _report_window(since, until, last, by_transaction_time, labels_by)
    frame = _read_prediction_log(lambda engine: window.read(engine, "served"))
    result = analyse_ab(frame, ab, top_k=params.train.top_k, window=window)
    _show_report(ab_table(result), result.model_dump_json(indent=2), json_out)


def _report_window(
    since: dt.datetime | None,
    until: dt.datetime | None,
    last: int | None,
    by_transaction_time: bool,
    labels_by: dt.datetime | None,
) -> ReportWindow:
    """The window as given; labels as known now unless LABELS_BY, so a rerun is repeatable."""
    from fraudops.experiments.abtest import ReportWindow

    return ReportWindow(
        start=since,
        end=until,
        last_n=last,
        time_column="tx_datetime" if by_transaction_time else "logged_at",
        labels_received_by=labels_by or dt.datetime.now(dt.UTC),
    )


def _read_prediction_log(read: Callable[[Engine], pd.DataFrame]) -> pd.DataFrame:
    from fraudops.logs.prediction_log import PredictionLogUnavailableError, open_prediction_log

    try:
        engine = open_prediction_log(get_settings().log_url)
    except PredictionLogUnavailableError as exc:
        raise fail(str(exc)) from exc
    try:
        return read(engine)
    finally:
        engine.dispose()


def _show_report(table: Table, document: str, json_out: Path | None) -> None:
    Console().print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(document + "\n")
        console.print(f"result → {json_out}")


@app.command()
def dashboards(
    workspace: Annotated[
        Path | None, typer.Option(help="Evidently workspace folder (default from settings).")
    ] = None,
    port: Annotated[int, typer.Option(help="TCP port of the UI on 127.0.0.1.")] = 8085,
) -> None:
    """Create the monitoring dashboards if needed, then serve the Evidently UI until stopped."""
    import signal
    import sys
    import time

    from fraudops.features.definitions import feature_columns
    from fraudops.local.servers import ServerError
    from monitoring.workspace import EvidentlyUI, ensure_project, open_workspace

    settings = get_settings()
    path = workspace or settings.monitoring_workspace
    project = ensure_project(open_workspace(path), feature_columns(load_params().features))
    # SIGTERM must unwind like Ctrl-C, or the UI's process group outlives this command.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with EvidentlyUI(path, log_dir=settings.home / "logs", port=port) as ui:
            typer.echo(f"dashboard: {ui.project_url(project)}")
            console.print("serving the Evidently UI; Ctrl-C stops it")
            while True:
                time.sleep(3600)
    except ServerError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        console.print("stopped")


# --- the loop: monitoring, retraining, traffic ---------------------------------------------

OnDrift = Annotated[
    Literal["auto", "event", "direct", "none"],
    typer.Option(help="On drift: an event with a Prefect server, else a direct call (auto)."),
]


@app.command()
def monitor(
    since: Since = None,
    until: Until = None,
    last: Last = None,
    by_transaction_time: ByTransactionTime = False,
    labels_by: LabelsBy = None,
    window_id: Annotated[str | None, typer.Option(help="Name of the window.")] = None,
    on_drift: OnDrift = "auto",
) -> None:
    """Drift and quality of a window of served traffic against the champion's training data."""
    _use_prefect()
    from fraudops.tracking.registry import RegistryError
    from monitoring.analysis import MonitoringError
    from pipelines.monitoring_flow import ReferenceMissing, monitoring_flow

    try:
        outcome = monitoring_flow(
            since=since,
            until=until,
            last_n=last,
            by_transaction_time=by_transaction_time,
            labels_by=labels_by,
            window_id=window_id,
            on_drift=on_drift,
        )
    except (MonitoringError, ReferenceMissing, RegistryError) as exc:
        raise fail(str(exc)) from exc
    decision = outcome.decision
    colour = "red" if decision.is_drift else "green"
    console.print(f"window {decision.window_id}: [{colour}]{decision.signal}[/]")
    for reason in decision.reasons:
        console.print(f"  {reason}")
    console.print(f"report {outcome.report_dir}, MLflow run {outcome.run_id}")
    if outcome.retraining:
        console.print(f"retraining requested: {outcome.retraining}")


@app.command()
def retrain(
    signal: Annotated[str, typer.Option(help="The signal it answers, as a tag.")] = "manual",
    window_id: Annotated[str, typer.Option(help="The window that showed it.")] = "",
    monitoring_run: Annotated[str, typer.Option(help="The monitoring run behind it.")] = "",
    requested_by: Annotated[
        str | None, typer.Option(help="Who asks, recorded as a tag (default: your user name).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why you ask, recorded as a tag.")] = "",
) -> None:
    """Version the matured traffic, train a challenger on it, and shadow it in serving.

    A request by hand: the cool-down that spaces out drift-triggered runs does not apply.
    """
    _use_prefect()
    from fraudops.data.validation import BatchRejected
    from fraudops.data.versioning import VersioningError
    from fraudops.tracking.registry import RegistryError
    from pipelines.retraining import retrain_flow

    try:
        outcome = retrain_flow(
            signal=signal,
            window_id=window_id,
            monitoring_run_id=monitoring_run,
            trigger="manual",
            requested_by=requested_by or _user_name(),
            reason=reason,
        )
    except (BatchRejected, RegistryError, VersioningError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    if outcome.status == "skipped":
        console.print(f"[yellow]skipped[/]: {outcome.reason}")
        return
    console.print(
        f"[green]retrained[/]: version {outcome.version} on data {outcome.data_version} "
        f"({len(outcome.batch_days)} new days); {outcome.routing}"
    )


def _user_name() -> str:
    """The operating system's name for whoever runs the command, recorded as who asked."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment or the user database
        return "unknown"


@app.command("simulate-traffic")
def simulate_traffic(
    days: Annotated[int, typer.Option(min=1, help="Simulated days to replay.")] = 14,
    scenario: Annotated[Scenario, typer.Option(help="Drift scenario.")] = "none",
    url: Annotated[str | None, typer.Option(help="Scoring API (default: serving_url).")] = None,
    rate: Annotated[float, typer.Option(min=0, help="Transactions/s; 0: unthrottled.")] = 0.0,
    seconds_per_day: Annotated[
        float, typer.Option(min=0, help="Wall-clock seconds per simulated day.")
    ] = 2.0,
    drain_labels: Annotated[
        bool, typer.Option(help="After the last day, run the clock on until all labels are in.")
    ] = True,
    monitor_every: Annotated[
        int, typer.Option(min=0, help="Run monitoring every N simulated days (0: never).")
    ] = 0,
    window_days: Annotated[int, typer.Option(min=1, help="Days each monitoring run sees.")] = 7,
) -> None:
    """Replay the days after the training data through the API, labels d days later.

    Drift decisions are printed as monitoring runs write them (alongside, or with
    --monitor-every in this process).
    """
    from fraudops.local.traffic import ReplayConfig, following_days, journal_dir, next_day, replay

    settings = get_settings()
    params = load_params()
    base_url = url or settings.serving_url or "http://127.0.0.1:8000"
    journal = journal_dir(settings)
    try:
        start = next_day(settings.raw_dir, journal)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from exc
    transactions = following_days(params.simulate, start, days, scenario)
    config = ReplayConfig(
        base_url=base_url,
        rate=rate,
        seconds_per_day=seconds_per_day,
        label_delay_days=params.features.label_delay_days,
        drain_labels=drain_labels,
    )
    watcher = _DecisionWatcher(settings.monitoring_reports_dir)
    on_day_end = _monitor_hook(monitor_every, window_days, start, watcher)
    console.print(
        f"replaying {transactions.height:,} transactions, {start} + {days} days, "
        f"scenario {scenario}, to {base_url}"
    )
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("transactions", total=transactions.height)
        stats = replay(
            transactions,
            config,
            journal=journal,
            on_progress=lambda sent: progress.update(bar, completed=sent),
            on_day_end=on_day_end,
        )
    watcher.show_new()
    console.print(
        f"{stats.scored:,} scored, {stats.failed:,} failed, {stats.labels_posted:,} labels "
        f"posted ({stats.labels_failed:,} failed) over {stats.days} days"
    )
    for error in stats.errors:
        console.print(f"  [red]{error}[/]")
    if stats.failed or stats.labels_failed:
        raise typer.Exit(code=1)


class _DecisionWatcher:
    """Prints each monitoring decision written under the reports folder, once."""

    def __init__(self, reports_dir: Path) -> None:
        self.reports_dir = reports_dir
        self.seen = set(self._files())

    def _files(self) -> list[Path]:
        return sorted(self.reports_dir.glob("*/decision.json"))

    def show_new(self) -> None:
        for path in self._files():
            if path in self.seen:
                continue
            self.seen.add(path)
            decision = json.loads(path.read_text())
            colour = "red" if decision["signal"] in ("data_drift", "concept_drift") else "green"
            console.print(
                f"monitoring {decision['window_id']}: [{colour}]{decision['signal']}[/] "
                f"{'; '.join(decision['reasons'])}"
            )


def _monitor_hook(
    every: int, window_days: int, first_day: dt.date, watcher: _DecisionWatcher
) -> Callable[[dt.date], None]:
    """At the end of each simulated day: run monitoring when due, print new decisions."""

    def at_day_end(day: dt.date) -> None:
        if every and ((day - first_day).days + 1) % every == 0:
            _use_prefect()
            from pipelines.monitoring_flow import monitoring_flow

            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
            try:
                monitoring_flow(
                    since=end - dt.timedelta(days=window_days), until=end, by_transaction_time=True
                )
            except Exception as exc:  # monitoring must never stop the traffic
                console.print(f"[red]monitoring failed[/]: {exc}")
        watcher.show_new()

    return at_day_end


@app.command("serve-flows")
def serve_flows(
    interval: Annotated[float, typer.Option(min=1, help="Seconds between monitoring runs.")] = 3600,
    window: Annotated[int, typer.Option(min=1, help="Newest predictions per run.")] = 20_000,
) -> None:
    """Serve the scheduled monitoring and the drift-triggered retraining until stopped.

    Event triggers need a real Prefect server: set FRAUDOPS_PREFECT_API_URL.
    """
    if not get_settings().prefect_api_url and not os.environ.get("PREFECT_API_URL"):
        raise fail("event triggers need a Prefect server: set FRAUDOPS_PREFECT_API_URL")
    _use_prefect()
    from pipelines.deployments import serve_flows as serve_deployments

    serve_deployments(interval, window)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port of the scoring API.")] = 8000,
    drift_days: Annotated[
        int, typer.Option(help="Days of drifted traffic: more than the label delay.")
    ] = 8,
    seconds_per_day: Annotated[
        float, typer.Option(min=0, help="Wall-clock seconds per simulated day of traffic.")
    ] = 2.0,
) -> None:
    """The whole loop on this machine: data, DVC, training, serving, drift, retraining, shadow.

    It runs in a git worktree of its own (FRAUDOPS_HOME/demo, branch fraudops-demo), where
    its data versions are commits and its state is git-ignored: this checkout stays as
    committed. The end of its output says where everything is.
    """
    from fraudops.local.demo import DemoError, DemoOptions, run_loop

    options = DemoOptions(port=port, drift_days=drift_days, seconds_per_day=seconds_per_day)
    try:
        run_loop(options)
    except DemoError as exc:
        raise fail(str(exc)) from exc
