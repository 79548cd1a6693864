"""Commands of a model's life: train, evaluate, promote, rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

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

if TYPE_CHECKING:
    from pydantic import BaseModel

    from fraudops.experiments.promotion_gate import Check

Report = TypeVar("Report", bound="BaseModel")


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
    if out is not None:
        if rev is not None:
            raise fail("--rev reads raw data through the flow; it cannot go with --out")
        _train_to_folder(features, out)
        return
    use_prefect()
    from fraudops.data.validation import BatchRejected
    from fraudops.data.versioning import VersioningError
    from fraudops.scale.cluster import ClusterUnreachable
    from fraudops.tracking.registry import RegistryError
    from pipelines.training import training_flow

    expected = (BatchRejected, ClusterUnreachable, RegistryError, VersioningError)
    try:
        outcome = training_flow(rev=rev, tags=parse_tags(tag or []))
    except (*expected, FileNotFoundError, ValueError) as exc:
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
    ab_report: Annotated[
        Path | None,
        typer.Option(help="A/B result (`fraudops report ab --json`) to weigh as live evidence."),
    ] = None,
    shadow_report: Annotated[
        Path | None,
        typer.Option(help="Shadow result (`fraudops report shadow --json`) to weigh as well."),
    ] = None,
) -> None:
    """Compare the challenger with the champion on the holdout; promote it if not worse.

    With --ab-report / --shadow-report, each report that reached a verdict is one more check
    the challenger must pass; the decision and every check land on its MLflow version.
    """
    from fraudops.data.validation import BatchRejected
    from fraudops.tracking.registry import MlflowException, RegistryError

    expected = (BatchRejected, RegistryError, MlflowException, LookupError, OSError, ValueError)

    if force and version is None:
        raise fail("--force needs --version")
    if force and (ab_report or shadow_report):
        raise fail("--force skips the gate, so it weighs no report")
    try:
        if force and version is not None:  # --force without --version was refused above
            _force_promote(version, reason)
            return
        use_prefect()
        from pipelines.promotion import promotion_flow

        evidence = _live_evidence(ab_report, shadow_report, version)
        outcome = promotion_flow(challenger_version=version, evidence=evidence)
    except expected as exc:
        raise fail(str(exc)) from exc
    colour = {"promoted": "green", "rejected": "yellow"}.get(outcome.outcome, "blue")
    console.print(f"[{colour}]{outcome.outcome}[/] version {outcome.challenger}: {outcome.reason}")
    console.print(f"champion is version {outcome.champion}")


def _live_evidence(
    ab_path: Path | None, shadow_path: Path | None, version: str | None
) -> list[Check]:
    """The reports as gate checks, each refused unless it judged the version being judged.

    A report still short of data is no evidence either way: it adds no check, and says so.
    """
    from fraudops.experiments.ab_report import ABResult, ab_check
    from fraudops.experiments.shadow_report import ShadowReport, shadow_check

    if ab_path is None and shadow_path is None:
        return []
    judged = version or _challenger_version()
    checks: list[Check | None] = []
    if ab_path is not None:
        ab = _read_report(ABResult, ab_path)
        treated = ab.arms[1].model_versions  # arms: control, then treatment
        if treated != [judged]:
            raise fail(
                f"{ab_path}: the {ab.treatment_arm!r} arm was served by versions "
                f"{', '.join(treated) or 'none'}, not by version {judged} alone"
            )
        checks.append(_shown(ab_check(ab), ab_path, ab.reason))
    if shadow_path is not None:
        shadow = _read_report(ShadowReport, shadow_path)
        if f" v{judged} (" not in (shadow.shadow_model or ""):
            raise fail(f"{shadow_path}: the shadow was {shadow.shadow_model}, not version {judged}")
        checks.append(_shown(shadow_check(shadow), shadow_path, shadow.reason))
    return [check for check in checks if check is not None]


def _challenger_version() -> str:
    from fraudops.tracking.registry import CHALLENGER, configure_mlflow, version_by_alias

    settings = get_settings()
    found = version_by_alias(configure_mlflow(settings), settings.model_name, CHALLENGER)
    if found is None:
        raise fail(f"{settings.model_name!r} has no {CHALLENGER} version: train a model first")
    return str(found.version)


def _read_report(kind: type[Report], path: Path) -> Report:
    """A report written with --json; a missing, unreadable or foreign file fails plainly."""
    from pydantic import ValidationError

    try:
        return kind.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "the document"
        raise fail(
            f"{path} is not a {kind.__name__} written by --json: {where}: {first['msg']}"
        ) from exc


def _shown(check: Check | None, path: Path, reason: str) -> Check | None:
    if check is None:
        console.print(f"[yellow]no verdict yet[/] in {path} ({reason}): not weighed")
    else:
        outcome = "[green]passes[/]" if check.passed else "[red]fails[/]"
        console.print(f"evidence {check.name}: {outcome}: {check.detail}")
    return check


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
