"""Commands of work past one process: batch scoring, on Dask when a scheduler is set."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fraudops.cli.base import DATA_DVC_FILE, app, console, fail, progress_steps
from fraudops.config import Settings, get_settings, load_params

if TYPE_CHECKING:
    from fraudops.modeling.steps import DataSource


@app.command("score-batch")
def score_batch(
    out: Annotated[Path, typer.Option(help="Parquet file of the scores to write.")],
    data_version: Annotated[
        str | None, typer.Option(help="Score the data DVC recorded at this git revision.")
    ] = None,
    raw: Annotated[
        Path | None, typer.Option(help="Score this raw folder (day=… partitions) instead.")
    ] = None,
) -> None:
    """Score every transaction of a data version with the champion: id, score, decision, model.

    Features and scores run on the Dask scheduler of FRAUDOPS_DASK_ADDRESS when it is set,
    in this process otherwise; both give the same scores.
    """
    from fraudops.data.validation import BatchRejected
    from fraudops.data.versioning import VersioningError
    from fraudops.modeling.steps import load_raw, validate_batch
    from fraudops.scale import batch_scoring
    from fraudops.scale.cluster import ClusterUnreachable, dask_client
    from fraudops.tracking.registry import MlflowException, RegistryError

    if data_version is not None and raw is not None:
        raise fail("--data-version and --raw name two data sets; pass one")
    settings = get_settings()
    expected = (BatchRejected, ClusterUnreachable, FileNotFoundError, LookupError, ValueError)
    registry = (MlflowException, RegistryError, VersioningError)
    try:
        params = load_params()
        with dask_client(settings) as client, progress_steps(4) as step:
            step("reading data")
            source = _data_source(settings, data_version, raw)
            batch = load_raw(source)
            validate_batch(batch, params.validate_)
            step("loading the champion")
            champion = batch_scoring.load_champion(settings)
            step("scoring" + (f" on {settings.dask_address}" if client else ""))
            scores = batch_scoring.score_batch(batch, champion, params.features, client)
            step(f"writing {out}")
            batch_scoring.write_scores(scores, out)
    except (*expected, *registry) as exc:
        raise fail(str(exc)) from exc
    alerts = int(scores[batch_scoring.DECISION].sum())
    console.print(
        f"{scores.height:,} transactions of data {source.version}, {alerts:,} alerts, "
        f"{champion.name} version {champion.version} → {out}"
    )


def _data_source(settings: Settings, rev: str | None, raw: Path | None) -> DataSource:
    """The raw folder given, the version DVC recorded at REV, or the workspace's data."""
    from fraudops.modeling import steps

    if raw is not None:
        return steps.workspace_data(raw, DATA_DVC_FILE)
    if rev is not None:
        return steps.data_at_rev(
            Path.cwd(), rev, settings.home / "data-versions", str(DATA_DVC_FILE)
        )
    return steps.workspace_data(settings.raw_dir, DATA_DVC_FILE)
