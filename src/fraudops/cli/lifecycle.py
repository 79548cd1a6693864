"""Commands of a model's life: train, evaluate, promote, rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fraudops.cli.base import (
    DATA_DVC_FILE,
    FEATURES_FILE,
    app,
    console,
    fail,
    parse_tags,
    progress_steps,
    use_prefect,
)
from fraudops.config import get_settings, load_params


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
    use_prefect()
    from pipelines.training import training_flow

    try:
        outcome = training_flow(rev=rev, tags=parse_tags(tag or []))
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
    from fraudops.data.validation import BatchRejected
    from fraudops.tracking.registry import MlflowException, RegistryError

    expected = (BatchRejected, RegistryError, MlflowException, LookupError, OSError, ValueError)

    if force and version is None:
        raise fail("--force needs --version")
    try:
        if force:
            _force_promote(version, reason)
            return
        use_prefect()
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
